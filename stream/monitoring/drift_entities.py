"""The drift monitor's entity-balanced category shares: rows past an entity's (or, without ids,
a run's) cap, the share test's batches and its alarms, beside the CUSUMs that share the state
machine (:mod:`stream.monitoring.entity_shares` holds the test itself)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

from stream.monitoring.drift_states import FeatureStates
from stream.monitoring.entity_runs import EntityRuns
from stream.monitoring.entity_shares import EntityCap, EntityShareTest, RunCap
from stream.monitoring.seasonal import SeasonalProfile

__all__ = ["EntityChannels"]


class EntityChannels(FeatureStates):
    """Caps, the entity-balanced share test's batches and alarms, and what every sequential alarm
    needs to open a state."""

    def _init_entity_shares(self, kc: int, budget_share: float) -> None:
        """The entity-balanced share test (categorical features, entity ids given): ``budget_share``
        of the false-alarm budget, split over its batches and features."""
        s, fc = self.settings, len(self._cat)
        self.entity_cap = EntityCap(s.entity_window, s.entity_max_rows) if s.entity_max_rows else None
        # runs of one entity: the floor of a category share's design effect (see StreamEstimates._burst_floor)
        self.entity_runs = EntityRuns(fc, s.block_size) if self.entity_cap is not None and fc else None
        shares = self._ref_cat / np.maximum(self._ref_cat.sum(axis=1, keepdims=True), 1)  # categories, missing
        self._cat_chance = (shares * shares).sum(axis=1)  # two random rows share the category
        self._run_figures: tuple[float, np.ndarray] = (1.0, np.zeros(fc))  # run length a row sees, ICC per feature
        # without entity ids, runs of one value stand for them (their reference shares)
        self.run_cap = RunCap(shares, s.entity_run_tail, max_run=s.entity_window, window=10 * s.entity_window) \
            if s.entity_max_rows and s.entity_run_tail and fc else None
        self._entities_given = False  # entity ids came with the rows
        self._runs_clustered = False  # without ids: more rows past a run's cap than chance gives (see _estimates)
        self._clustered_estimated = False  # the estimates were refreshed since runs showed
        # rows past a cap (an entity's or a run's) and rows, counted as blocks are processed: the same
        # at every refresh however rows were batched
        self._capped_tally = self._rows_tally = 0
        self._eshare = None
        # the capped shares' own daily profile: on a slow day (10,000-20,000 events) the batches a
        # batch is tested against span 4-10 hours, over which the cycle moves a share as much as a
        # batch's sampling error. The profile of all rows cannot stand in: bursts of one entity's
        # category make its hour means 5-40 times noisier than the capped traffic's
        self._cap_season: SeasonalProfile | None = None
        self._cap_dev: np.ndarray | None = None
        self._ref_cycle: np.ndarray | None = None  # the training data's (see _seed_share_cycle)
        self._cap_batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (rows per hour, counts, frozen) to learn
        if budget_share > 0:
            rows = s.entity_batch_blocks * s.block_size
            self._eshare = EntityShareTest(fc, kc, s.entity_batch_blocks, s.entity_history, s.entity_min_batches,
                                           alpha=rows * budget_share / s.expected_run_length / fc,
                                           js_threshold=s.js_threshold, leave_p=s.leave_p)
            if s.seasonal and fc:
                self._cap_season = SeasonalProfile(fc * kc, s.entity_seasonal_min_rows, s.seasonal_memory_rows,
                                                   s.seasonal_alpha)

    def capped_rows(self) -> tuple[int, int]:
        """Rows left out of the entity-balanced shares (past an entity's or a run's cap), of rows
        processed while a cap could apply."""
        return self._capped_tally, self._rows_tally

    def _count_capped(self, crows: np.ndarray | None, i: int) -> tuple[bool, bool]:
        """Block ``i``'s rows past a cap, counted; whether the window tests and the block CUSUM are
        held: runs first seen after the tests started (no burst in the first rows) hold them to
        twice their warm-up as runs seen from the start do, block by block (a burst at row 3,600 of
        a stationary stream opened a false drift at 3,999 before the next refresh saw it)."""
        if self.entity_cap is None and self.run_cap is None:
            return False, False
        s = self.settings
        self._capped_tally += int(crows[i]) if crows is not None else 0
        self._rows_tally += s.block_size
        # for good once seen: a few early bursts then a quiet stretch took the share back under the
        # bar at row 4,000 of a bursty stream, and tests that started then on a design effect of 2-3
        # (10-27 once measured) opened a false drift at the next burst
        if not self._clustered and self._capped_tally > s.entity_clustered * self._rows_tally:
            self._clustered = True
        warm = s.dependence_min_batches * s.dependence_scales[0]  # blocks of the warm-up
        # and until the estimates have been refreshed since the runs showed: a segment's window tests
        # are computed on the estimates at its start (a 2,000-row window tested at row 6,399 on a
        # design effect of 1.2 refreshed to 20 at 6,400 opened a false drift)
        stale = self._clustered and not self._clustered_estimated
        return self._clustered and (self._blocks < 2 * warm or stale), \
            self._clustered and (self._blocks < 4 * warm or stale)

    def _share_test_fed(self) -> bool:
        """The entity-balanced test gets capped shares: entity ids came, or runs past chance stand for them."""
        return self._eshare is not None and (self._entities_given or self._runs_clustered)

    def _refresh_cap_season(self) -> None:
        """The batches since the last refresh into the capped shares' daily profile; the profile in
        use, judged at twice the binomial noise (the capped rows of one entity still come a few at a
        time)."""
        if self._cap_season is None:
            return
        if self._cap_batches:
            # a batch's shares go to each hour it spans, weighted by its rows there (at 15,000 events
            # a day a batch is 1.3 hours: taken at its main hour only, some hours were never fed)
            rows = np.stack([h for h, _, _ in self._cap_batches])  # [batch, 24]
            b, hours = np.nonzero(rows)
            part = rows[b, hours] / rows.sum(axis=1)[b]
            counts = np.stack([c for _, c, _ in self._cap_batches]).astype(float)[b]  # [entry, feature, slot]
            present = counts.sum(axis=2, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                shares = (counts / present).reshape(len(b), -1)
            weights = (np.broadcast_to(present, counts.shape) * part[:, None, None]).reshape(len(b), -1)
            frozen = np.repeat(np.stack([f for _, _, f in self._cap_batches])[b], self._kc, axis=1)
            self._cap_season.add_many(hours, shares, weights, frozen)
            self._cap_batches = []
        self._cap_dev = self._cap_season.centred_shares(2.0)

    def _entity_step(self, counts: np.ndarray, hours: np.ndarray, fired: dict[str, list[dict[str, Any]]]) -> None:
        """A whole batch's capped category counts and its rows per hour of the day; alarms of
        features out of drift (and not just closed)."""
        fn, fc = len(self._num), len(self._cat)
        learn = ~self._open_arr[fn : fn + fc]
        if self._cap_season is not None and hours.any():  # learned at the next refresh, in one call
            self._cap_batches.append((hours, counts[:, :-1], ~learn))  # a finished batch's arrays: not reused
        for j, ev in self._eshare.test_batch(counts, learn, hours, self._share_cycle()):  # type: ignore[union-attr]
            name = self._cat[j]
            if not self._may_open(name):
                continue
            slot = ev.pop("slot")
            fired.setdefault(name, []).append({
                "feature": name, **ev, "window": self.settings.entity_batch_blocks * self.settings.block_size,
                "design_effect": None, "score": self._share_name(j, slot)})

    def _share_cycle(self) -> np.ndarray | None:
        """The capped shares' centred daily profile ``[24, feature * slot]``; until it is usable (every
        hour seen ``entity_seasonal_min_rows`` times: with quiet nights, days), the training data's
        (:meth:`_seed_share_cycle`). A batch tested against batches hours before it, on a slow
        afternoon or at the end of a quiet night, read a share moving with the day as a 5-sd step."""
        return self._cap_dev if self._cap_dev is not None else self._ref_cycle

    def _seed_share_cycle(self, means: np.ndarray, weights: np.ndarray) -> None:
        """The category shares' centred daily profile of the training data, from its channel means
        and rows per hour (``[24, channel]``), as two daily harmonics fitted by weighted least
        squares: a quiet hour holds a few hundred training rows, and its own share, 2.6 sd off the
        cycle, moved a batch's expected share by 0.14 (a false drift). Not the live profile: bursts
        of one entity's category make its hour means 5-40 times noisier than the capped traffic's.
        The training data's bursts are spread over the day, so its cycle is flatter than the capped
        traffic's, and stands in only until that one is usable."""
        if self._cap_season is None:  # no share test, or daily profiles turned off
            return
        cut = self._sl["cprops"]  # the category slot channels, feature by feature
        m, w = np.nan_to_num(means[:, cut]), weights[:, cut]
        t = 2 * np.pi * (np.arange(24) + 0.5) / 24
        X = np.stack([np.ones(24), np.cos(t), np.sin(t), np.cos(2 * t), np.sin(2 * t)], axis=1)
        fit = np.zeros_like(m)
        for c in np.flatnonzero((w > 0).sum(axis=0) >= 12):  # hours enough for a cycle
            r = np.sqrt(w[:, c])
            fit[:, c] = X @ np.linalg.lstsq(X * r[:, None], m[:, c] * r, rcond=None)[0]
        pi = w / np.maximum(w.sum(axis=0), 1e-12)
        centre = (pi * fit).sum(axis=0)
        dev = fit - centre
        # a channel whose harmonics the rows cannot tell from a flat day keeps none (chi-square, 4 dof)
        chi2 = (w * dev**2).sum(axis=0) / np.maximum(centre * (1.0 - centre), 1e-12)
        dev[:, chi2 <= special.chdtri(4, self.settings.seasonal_alpha)] = 0.0  # not scipy.stats: slow to import
        self._ref_cycle = dev if np.abs(dev).max() > 0 else None

    def _may_open(self, name: str) -> bool:
        """A sequential alarm counts for a feature out of drift whose last drift closed at least
        the shortest window ago."""
        return not self._open[name] and self._blocks - self._reset_at[name] >= self._wblocks[0]

    def _share_name(self, j: int, slot: int) -> str:
        """The score name of categorical feature ``j``'s share ``slot`` (its reference category)."""
        cats = self.profile.categorical[self._cat[j]].categories
        return f"share:{cats[slot]}" if slot < len(cats) else "share:__other__"
