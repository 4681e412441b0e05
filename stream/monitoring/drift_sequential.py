"""The drift monitor's sequential detectors, run beside the window tests.

A CUSUM over batches of ``cusum_blocks`` blocks per score channel (each numeric
feature's mid-rank, each category's share, missing rates) catches small persistent
shifts no single window sees; an optional river detector (Page-Hinkley or ADWIN) watches
the model score. Their alarms go through the same per-feature state machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stream.monitoring.batch_math import group_sums, groups_of
from stream.monitoring.cusum import Cusum, Hold, alarm_level, run_length
from stream.monitoring.drift_entities import EntityChannels
from stream.monitoring.drift_event import MULTIVARIATE, DriftEvent, finite, nan_to_num
from stream.monitoring.seasonal import hour_mix

__all__ = ["SequentialDetectors"]


class SequentialDetectors(EntityChannels):
    """The CUSUM channels and the river score detector of a drift monitor."""

    def _init_cusum(self, erl: float) -> None:
        """CUSUM channels: each numeric feature's mid-rank (location), its spread (Klotz's squared
        normal score: a change of scale at the same location), each category's share, missing rates."""
        s, sl = self.settings, self._sl
        mask = np.zeros(self._theta.size, dtype=bool)
        for key in ("u", "spread", "miss", "cprops", "cmiss"):
            mask[sl[key]] = True
        mask &= self._theta > 0  # shares the reference never saw are the window tests' job
        self._fast_candidates = mask.copy()
        # the batch CUSUM's second moments (spreads; the pairs' linearised correlations, mean 0
        # under the reference) at a weight of their side in its budget (weighted Bonferroni): the
        # mid-ranks' and shares' levels hardly move (inside mixed traffic a 0.5 sd mean shift took
        # a batch more on 2 of 8 seeds when the spreads weighed as much as they do)
        second = np.zeros_like(mask)
        second[sl["spread"]] = mask[sl["spread"]]
        second[sl["psi"]] = True
        w2 = s.cusum_second_moment_weight
        if w2 > 0:
            mask |= second
        else:
            mask &= ~second
        self._cus_mask, self._second = mask, second
        fc, kc = len(self._cat), self._kc
        self._mix_seen = (self._theta[sl["cprops"]] > 0).reshape(fc, kc)
        self._mix_df = np.maximum(self._mix_seen.sum(axis=1) - 1, 1)
        mixed = int((self._mix_seen.sum(axis=1) >= 2).sum())  # features with a mix to watch: one side each
        fast_sides = max(2 * int(self._fast_candidates.sum()) + mixed, 1)
        share = s.cusum_block_share if s.cusum_block else 0.0  # the block CUSUM's part of the budget
        self._cus_erl = erl / (1.0 - share)
        # their levels follow the channels that run (_set_cusum_levels, below and at each refresh)
        self._cusum = Cusum(self._theta.size, s.cusum_k, 1.0) if s.cusum else None
        # channels of a large design effect: longer batches, the same false-alarm rate per row
        self._cusum_long = Cusum(self._theta.size, s.cusum_k, 1.0) if s.cusum else None
        self._long_mask = np.zeros(self._theta.size, dtype=bool)
        self._cus_lr = self._g0.copy()  # the long-run variances the batch CUSUMs read (_cusum_gate)
        self._cus_off = np.zeros(self._theta.size, dtype=bool)  # channels the batch CUSUMs leave to another test
        self._set_cusum_levels()
        self._shares = np.zeros(self._theta.size, dtype=bool)  # category shares and missing rates
        for key in ("miss", "cprops", "cmiss"):
            self._shares[sl[key]] = True
        self._long_acc = []  # the batches of the open long batch
        self._fast = Cusum(self._theta.size, s.cusum_block_k, alarm_level(
            erl / max(share, 1e-12) * fast_sides / s.block_size, s.cusum_block_k)) if s.cusum and s.cusum_block else None
        self._fast_mask = np.zeros(self._theta.size, dtype=bool)
        # a block moves a share's or a spread's statistic by at most k (a skewed block mean is no alarm
        # alone: a burst of one entity fills a block's tails); a mid-rank is a mean of bounded,
        # symmetric scores, as light-tailed as a normal one, so one block far enough out may alarm by
        # itself (a 1 sd step after 100 rows, not 200)
        self._fast_clip = np.full(self._theta.size, 2.0 * s.cusum_block_k)
        if self._fast is not None:
            self._fast_clip[sl["u"]] = s.cusum_block_k + self._fast.h + 1.0
        self._fast_live = None  # _fast_mask without the channels of open states
        # each categorical feature's mix in one block (Pearson's X^2 over the reference's categories,
        # Wilson-Hilferty normal): a change spread over several categories adds up there, while each
        # share's own CUSUM sees only its part (a 0.4/0.3/0.2/0.1 mix turned uniform: 199 rows, not 299-499)
        self._mix = (Cusum(fc, s.cusum_block_k, self._fast.h, upper_only=True)
                     if self._fast is not None and mixed else None)
        self._mix_gate = np.zeros(fc, dtype=bool)
        self._mix_design = np.ones(fc)
        # the effect a CUSUM alarm needs, in score sd: a category's share (and a mix) as much as the
        # chi-square's Jensen-Shannon gate asks of it (distance d <-> a share moved by d * sqrt(8 ln 2)
        # of its sd, Cohen's w likewise), other scores cusum_min_shift
        self._share_shift = s.js_threshold * float(np.sqrt(8.0 * np.log(2.0)))
        self._min_shift = np.full(self._theta.size, s.cusum_min_shift)
        self._min_shift[sl["cprops"]] = max(s.cusum_min_shift, self._share_shift)
        # a pair's correlation as much as the correlation test's gate asks (psi's sd is 1 - rho^2)
        self._min_shift[sl["psi"]] = np.maximum(s.cusum_min_shift, s.correlation_threshold / np.sqrt(self._g0[sl["psi"]]))
        # an open drift's channels keep stepping here: it closes only once they show no shift
        self._hold = Hold(self._min_shift, s.cusum_k) if s.cusum else None
        self._cus_sum, self._cus_w = np.zeros(self._theta.size), np.zeros(self._theta.size)
        self._cus_hours, self._cus_nblk = np.zeros(24), 0

    def _cusum_segment(self, i0: int, seg: int, means: np.ndarray, weights: np.ndarray,
                       hours: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Sums of the batches of ``cusum_blocks`` blocks completed in this segment, by the block
        count that completes them (the open batch carries over)."""
        cb, sl, c0 = self.settings.cusum_blocks, slice(i0, i0 + seg), self._blocks
        w = weights[sl]
        contrib = np.where(w > 0, nan_to_num(means[sl]) * w, 0.0)
        hot = np.zeros((seg, 24))
        known = np.flatnonzero(hours[sl] >= 0)
        hot[known, hours[sl][known]] = self.settings.block_size
        starts, lasts, complete = groups_of(self._cus_nblk, seg, cb)
        # side by side: one pass of group sums (the same additions)
        c = w.shape[1]
        tot = group_sums(np.concatenate([contrib, w, hot], axis=1), starts,
                          np.concatenate([self._cus_sum, self._cus_w, self._cus_hours]))
        sums, ws, hrs = tot[:, :c], tot[:, c : 2 * c], tot[:, 2 * c :]
        out: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for g, full in enumerate(complete):  # the CUSUM steps themselves run in block order (they see the state)
            if full:
                out[c0 + lasts[g] + 1] = (sums[g], ws[g], hrs[g])
        if complete[-1]:
            self._cus_sum, self._cus_w, self._cus_hours, self._cus_nblk = 0.0 * sums[0], 0.0 * ws[0], 0.0 * hrs[0], 0
        else:
            self._cus_sum, self._cus_w, self._cus_hours = sums[-1], ws[-1], hrs[-1]
            self._cus_nblk = (self._cus_nblk + lasts[-1]) % cb + 1
        return out

    def _fast_gate(self) -> None:
        """The channels the block CUSUM watches (at every refresh): nearly independent rows, no
        wander that a block's own noise does not dwarf and no daily profile (a CUSUM adds up
        persistent biases: those channels are the batch CUSUM's)."""
        if self._fast is not None:
            s, design = self.settings, self._lr / self._g0
            quiet = self._slow * s.block_size <= 0.25 * np.maximum(self._lr, self._g0)
            if self._season_dev is not None:  # a daily profile in use: the profile moves within an hour
                quiet &= ~(self._season_dev != 0).any(axis=0)
            # an indicator's block count must be near normal: 10 effective rows on either side
            rows = s.block_size / np.maximum(design, 1.0)
            normal = (np.minimum(self._theta, 1.0 - self._theta) * rows >= 10.0)
            normal[self._sl["u"]] = normal[self._sl["spread"]] = True
            # a feature's spread reads the same values as its mid-rank: bursts of one entity's level
            # show as the mid-rank's dependence and push the spread up, block after block
            d_spread = np.maximum(design[self._sl["spread"]], design[self._sl["u"]])
            design = design.copy()
            design[self._sl["spread"]] = d_spread
            self._fast_mask = self._fast_candidates & (design <= s.cusum_block_max_design) & quiet & normal
            self._fast_live = None
            if self._mix is not None:  # every category of the reference in the block regime, expecting 5 rows
                fc, cp, seen = len(self._cat), self._sl["cprops"], self._mix_seen
                ok = (self._fast_candidates & (design <= s.cusum_block_max_design) & quiet
                      & (self._theta * rows >= 5.0))[cp].reshape(fc, -1)
                self._mix_gate = (ok | ~seen).all(axis=1) & (seen.sum(axis=1) >= 2)
                d = np.maximum(design[cp].reshape(fc, -1), 1.0)
                self._mix_design = np.where(seen, d, 0.0).sum(axis=1) / np.maximum(seen.sum(axis=1), 1)

    def _fast_z(self, sl: slice, means: np.ndarray, weights: np.ndarray,
                hours: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any] | None:
        """Standardised block means (clipped), their deviations in score sd and validity, and the
        category mixes' statistics (:meth:`_mix_z`, None when no feature is watched), for the
        block CUSUM over the blocks ``sl`` of a segment (None when it watches nothing)."""
        if self._fast is None or not self._fast_ready or not (self._fast_mask.any() or self._mix_gate.any()):
            return None
        w = weights[sl]
        ok = w > 0
        dev = np.where(ok, nan_to_num(means[sl]), self._theta) - self._theta
        noise: Any = 0.0
        if self._season_dev is not None:
            assert self._season_var is not None  # set together with _season_dev
            h = hours[sl]
            known = (h >= 0)[:, None]
            dev = dev - np.where(known, self._season_dev[np.maximum(h, 0)], 0.0)
            noise = np.where(known, self._season_var[np.maximum(h, 0)], 0.0)
        var = np.maximum(self._lr, self._g0) / np.where(ok, w, 1.0) + self._g0 / self._m + self._slow + noise
        c = self._fast_clip
        mix = self._mix_z(means[sl], weights[sl]) if self._mix_gate.any() else None
        return np.clip(dev / np.sqrt(var), -c, c), dev / np.sqrt(self._g0), ok, mix

    def _mix_z(self, means: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per block and categorical feature: Pearson's X^2 of the block's category mix against the
        reference (the categories it saw), over the feature's design effect (first-order
        Rao-Scott), as a Wilson-Hilferty normal deviate clipped at 2k (a chi-square's upper tail
        is long); the unbiased squared effect (Cohen's w^2) for the gate; validity."""
        cp, fc, seen, df = self._sl["cprops"], len(self._cat), self._mix_seen, self._mix_df
        nb = means.shape[0]
        p = np.where(seen, self._theta[cp].reshape(fc, -1), 1.0)
        q = nan_to_num(means[:, cp]).reshape(nb, fc, -1)
        n = weights[:, cp].reshape(nb, fc, -1)[:, :, 0]
        x2 = n * np.where(seen, (q - p) ** 2 / p, 0.0).sum(axis=-1)
        v = 2.0 / (9.0 * df)
        z = (np.cbrt(x2 / self._mix_design / df) - (1.0 - v)) / np.sqrt(v)
        c = 2.0 * self.settings.cusum_block_k
        return np.clip(z, -c, c), (x2 - df) / np.maximum(n, 1.0), n > 0

    def _fast_step(self, fast: tuple[Any, ...], j: int, fired: dict[str, list[dict[str, Any]]]) -> None:
        """Block ``j`` of what ``_fast_z`` returned, through the block CUSUM and the category-mix
        CUSUM (features in drift sit out)."""
        cus = self._fast
        assert cus is not None  # _fast_z returned statistics
        if self._fast_live is None:  # kept until a state or the gate changes
            self._fast_live = self._fast_mask & ~self._open_arr[self._owner]
        hit = cus.step(fast[0][j], fast[1][j], self._fast_live & fast[2][j])
        if hit.any():
            self._fire_cusum(hit, cus, 1, fired)
        if fast[3] is not None and self._mix is not None:
            z, w2, ok = (a[j] for a in fast[3])
            fn = len(self._num)
            hit = self._mix.step(z, w2, self._mix_gate & ~self._open_arr[fn : fn + len(self._cat)] & ok)
            if hit.any():
                self._fire_mix(hit, fired)

    def _fire_mix(self, hit: np.ndarray, fired: dict[str, list[dict[str, Any]]]) -> None:
        """Category-mix alarms of features not in drift whose run's effect (Cohen's w: the root of
        the run's mean unbiased w^2 per block) passes the Jensen-Shannon gate's equivalent."""
        s, mix = self.settings, self._mix
        assert mix is not None  # called from _fast_step with it
        stat, run = mix.statistic(), mix.run
        w = np.sqrt(np.maximum(mix.shift_sum / np.maximum(run, 1.0), 0.0))
        gate = max(s.cusum_min_shift, self._share_shift)
        for j in np.flatnonzero(hit & (w >= gate)):
            name = self._cat[j]
            if not self._may_open(name):
                continue
            fired.setdefault(name, []).append({
                "feature": name, "test": "cusum", "statistic": finite(stat[j]), "threshold": finite(mix.h),
                "alpha": 1.0 / run_length(mix.h, mix.k), "p_value": min(1.0 / run_length(float(stat[j]), mix.k), 1.0),
                "effect_metric": "cohens_w", "effect_size": finite(w[j]), "effect_threshold": gate,
                "window": int(run[j]) * s.block_size, "n": int(run[j]) * s.block_size, "batch_rows": s.block_size,
                "reference": "profile", "n_reference": int(self._m[self._sl["cmiss"]][j]),
                "design_effect": finite(self._mix_design[j]), "score": "mix"})

    def _cusum_gate(self) -> None:
        """Shares whose batch CUSUM runs on long batches (at every refresh): a design effect past
        ``cusum_long_design`` means few bursts per batch, and a burst moves a share one way only
        (an entity's category or a missing value: up), so its batch means are skewed. A numeric
        feature's mid-rank moves both ways with the entity's level and keeps its short batches."""
        # a spread at least its mid-rank's design effect: bursts of one entity's level push it up
        # batch after batch, and its own estimate swings (17.5 -> 7.9 on one stationary stream, whose
        # spread then opened a false drift); set here, with the estimates, not at every batch
        self._cus_lr = self._lr.copy()
        sp, u = self._sl["spread"], self._sl["u"]
        self._cus_lr[sp] = np.maximum(self._lr[sp], self._g0[sp] * self._lr[u] / self._g0[u])
        bursty = self._cus_mask & self._shares & (self._lr > self.settings.cusum_long_design * self._g0)
        self._long_mask = bursty
        off_before, self._cus_off = self._cus_off, np.zeros_like(bursty)
        if self._share_test_fed():
            # given entity ids (or runs standing for them), a bursty category share's steps are the
            # entity-balanced test's, which sees them at the capped shares' noise; summed against the
            # reference, the bursts' skew alone opened false drifts (6 of 60 stationary mixed streams
            # with random process parameters)
            self._cus_off = bursty.copy()
            self._cus_off[: self._sl["cprops"].start] = False
            self._cus_off[self._sl["cprops"].stop :] = False
            self._long_mask = bursty & ~self._cus_off
        if not np.array_equal(self._cus_off, off_before):
            self._set_cusum_levels()

    def _set_cusum_levels(self) -> None:
        """The batch CUSUMs' levels from the budget's sides (per channel and side, weighted
        Bonferroni): channels left to another test (bursty shares, to the entity-balanced test)
        spend none of it, so their sides go to the channels that run. Mixed traffic with entity
        ids leaves its 5 shares of c to that test: the other channels' level 5.88 -> 5.51."""
        if self._cusum is None or self._cusum_long is None:
            return
        s, size = self.settings, self._theta.size
        on, w2 = self._cus_mask & ~self._cus_off, s.cusum_second_moment_weight
        sides = max(2 * int((on & ~self._second).sum()) + w2 * 2 * int((on & self._second).sum()), 1)
        arl = self._cus_erl * sides / (s.cusum_blocks * s.block_size)  # per channel and side, in batches
        h = alarm_level(arl, s.cusum_k)
        levels = np.full(size, h)
        if w2 > 0:
            levels[self._second] = alarm_level(arl / w2, s.cusum_k)
        self._cusum.h, self._cusum.levels = h, levels
        long = alarm_level(arl / s.cusum_long_batches, s.cusum_k)
        self._cusum_long.h, self._cusum_long.levels = long, np.full(size, long)

    def _cusum_z(self, sums: np.ndarray, ws: np.ndarray,
                 hrs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A batch's standardised deviations (clipped), deviations in score sd, validity, and the
        batch mean's sd in score sd."""
        ok = ws > 0
        m = np.where(ok, sums / np.where(ok, ws, 1.0), self._theta)
        adj: Any = 0.0
        noise: Any = 0.0
        rel: Any = 1.0
        if self._season_dev is not None and hrs.any():
            assert self._season_var is not None  # set together with _season_dev
            # an hour's profile error is one bias for all its batches, which the CUSUM adds up
            # over its run: counted once per batch of the hour's visit, so that a run's sum has the
            # variance it really has (consecutive batches of one hour correlated ~0.12 on
            # 150 random mixed streams at 20,000-100,000 events a day; ~0 across an hour's end)
            per_visit = np.maximum(self._visit_rows / max(float(hrs.sum()), 1.0), 1.0)
            adj, noise = hour_mix(hrs, self._season_dev, self._season_var * per_visit[:, None], self._presence)
            # a share its hours raise varies as theirs does (as the window tests, WindowTests._test_window)
            rel = self._share_variance_ratio(adj)
        dev = m - adj - self._theta
        var = self._cus_lr * rel / np.where(ok, ws, 1.0) + self._g0 / self._m + self._slow + noise
        c = self.settings.cusum_clip  # one burst moves the statistic by a bounded step
        sd = np.sqrt(var)
        return np.clip(dev / sd, -c, c), dev / np.sqrt(self._g0), ok, np.sqrt(self._g0) / sd

    def _cusum_step(self, sums: np.ndarray, ws: np.ndarray, hrs: np.ndarray,
                    fired: dict[str, list[dict[str, Any]]]) -> None:
        """One CUSUM batch, standardised with the current estimates (features in drift sit out).
        It starts once every dependence scale has its batches: a CUSUM sums small biases, so an
        underestimated variance during the warm-up would add up to an alarm. Channels on long
        batches step every ``cusum_long_batches`` batches, on their sum.

        The channels of open drifts step their :class:`~stream.monitoring.cusum.Hold` as soon as
        the window tests run (a state may close from then on): an underestimated variance there
        only keeps a drift open longer, and half the effect gate still has to show."""
        hold_on = self._hold is not None and self._ready and self._open_arr.any()
        if not (self._cusum_ready or hold_on):
            return
        s, live = self.settings, self._cus_mask & ~self._open_arr[self._owner] & ~self._cus_off
        z, shift, ok, scale = self._cusum_z(sums, ws, hrs)
        short = self._cus_mask & ~self._long_mask & ~self._cus_off & ok
        marg = self._pairs_in_drift()
        if marg is not None:
            live[self._sl["psi"]] &= ~marg
            short[self._sl["psi"]] &= ~marg
        if hold_on:
            self._hold.step(z, scale, short & self._open_arr[self._owner])  # type: ignore[union-attr]
        if not self._cusum_ready:
            return
        cus = self._cusum
        hit = cus.step(z, shift, live & short)  # type: ignore[union-attr]
        if hit.any():
            self._fire_cusum(hit, cus, s.cusum_blocks, fired)  # type: ignore[arg-type]
        self._long_acc.append((sums, ws, hrs))
        if len(self._long_acc) < s.cusum_long_batches:
            return
        acc, self._long_acc = self._long_acc, []
        if not self._long_mask.any():
            return
        z, shift, ok, _ = self._cusum_z(*(sum(a[i] for a in acc) for i in range(3)))
        long = self._cusum_long
        hit = long.step(z, shift, live & self._long_mask & ok)  # type: ignore[union-attr]
        if hit.any():
            self._fire_cusum(hit, long, s.cusum_blocks * s.cusum_long_batches, fired)  # type: ignore[arg-type]

    def _fire_cusum(self, hit: np.ndarray, cus: Cusum, blocks: int, fired: dict[str, list[dict[str, Any]]]) -> None:
        """CUSUM alarms (batches of ``blocks`` blocks) of features not in drift whose run's mean
        shift passes its gate (``cusum_min_shift``; a category share: the Jensen-Shannon gate's equivalent)."""
        s, names = self.settings, self._states
        stat, shift, run, rows = cus.statistic(), cus.mean_shift(), cus.run, blocks * s.block_size
        for ch in np.flatnonzero(hit & (shift >= self._min_shift)):
            name = names[self._owner[ch]]
            if not self._may_open(name):
                continue
            fired.setdefault(name, []).append({
                "feature": self._pair_name(int(ch)) if name == MULTIVARIATE else name, "test": "cusum",
                "statistic": finite(stat[ch]), "threshold": finite(cus.levels[ch]),
                "alpha": 1.0 / run_length(float(cus.levels[ch]), cus.k),
                "p_value": min(1.0 / run_length(float(stat[ch]), cus.k), 1.0),
                "effect_metric": "mean_shift_sd", "effect_size": finite(shift[ch]),
                "effect_threshold": float(self._min_shift[ch]), "window": int(run[ch]) * rows,
                "n": int(run[ch]) * rows, "batch_rows": rows, "reference": "profile",
                "n_reference": int(self._m[ch]), "design_effect": finite(self._lr[ch] / self._g0[ch]),
                "score": self._channel_name(int(ch))})

    def _pair_name(self, ch: int) -> str:
        """``"x|y"``: the numeric pair of linearised-correlation channel ``ch``."""
        j = ch - self._sl["psi"].start
        return f"{self._num[self._pairs[0][j]]}|{self._num[self._pairs[1][j]]}"

    def _channel_name(self, ch: int) -> str:
        for key, part in self._sl.items():
            if part.start <= ch < part.stop:
                if key == "cprops":
                    return self._share_name(*divmod(ch - part.start, self._kc))
                return {"u": "location", "miss": "missing", "cmiss": "missing", "psi": "correlation"}.get(key, key)
        return "?"


    def _run_detector(self, scores: np.ndarray, start: int) -> list[DriftEvent]:
        out = []
        for i, v in enumerate(scores.tolist()):
            if v != v:  # NaN: missing score
                continue
            self._detector.update(v)
            if self._detector.drift_detected:
                adwin = self.settings.score_detector == "adwin"  # ADWIN: mean after the cut; PH: the value
                ev = {"feature": self.settings.score_feature, "test": self.settings.score_detector, "window": None,
                      "statistic": float(self._detector.estimation if adwin else v), "reference": "stream",
                      "threshold": float(self._detector.delta if adwin else self._detector.threshold)}
                out.append(self._event(start + i, "score_drift", (self.settings.score_feature,), (ev,)))
        return out
