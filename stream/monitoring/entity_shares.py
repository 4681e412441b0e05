"""Entity-balanced category shares: a heavy entity's burst counts as one entity, not hundreds of rows.

A heavy entity (a merchant, a bot, a big customer) sends runs of events that all carry its
own category, so a run of 200 rows is one observation of the category mix, not 200. Counted
at full weight, such bursts make a category share vary like a sample of a few dozen rows
(design effects of 30-50 on bursty traffic), and a change of the share among the other
traffic takes 10,000+ rows to find. With entity ids, :class:`EntityCap` counts at most
``max_rows`` rows of one entity per tumbling window of ``window`` rows, and
:class:`EntityShareTest` tests batches of those capped shares. Without entity ids (a recorded
file, another producer), :class:`RunCap` caps runs of one value instead: a burst is a run of its
category far longer than independent rows give. It cannot tell a burst whose rows interleave
with other traffic from that traffic; entity ids can.

The capped shares cannot be compared with the reference profile: the reference is an
i.i.d. training sample in which heavy entities hold their full share, and capping them
moves every share by their categories' excess (with 10 heavy entities holding 30 % of the
traffic, CUSUMs on capped shares against the reference opened false drifts on 15 of 16
seeded streams). So the test is self-referenced: each batch against the few batches just
before it, whose difference a step shows in full while the daily cycle cancels, with the
noise of that difference measured on the feature's own history. It sees a *step* of the
category mix within the stream, fast; a mix already different at start-up, or drifting
slower than a few batches, stays with the reference-based tests.

An id that held more than half of the previous window is not an entity but a default
("anonymous", a constant field): it is not capped. Rows without an id (None, "") count.

Examples
--------
>>> cap = EntityCap(window=10, max_rows=2)
>>> cap.counted(["a", "b", "a", "a", None, "a"]).tolist()
[True, True, True, False, True, False]
>>> cap.counted(["a", "a", "a", "a", "a"]).tolist()   # the window's last four rows: "a" is at its cap
[False, False, False, False, True]
>>> cap.counted(["u"] * 10 + ["u"] * 3).tolist()[-3:]   # "u" held the whole last window: a default, not capped
[True, True, True]

A category's share jumps from 10 % to 25 % (two categories, batches of 1,000 rows):

>>> rng = np.random.default_rng(0)
>>> t = EntityShareTest(n_features=1, n_slots=2, batch_blocks=10, history=30, min_batches=10,
...                     alpha=1e-4, js_threshold=0.05)
>>> def block(p):   # counts of one 100-row block: [share a, share b, missing]
...     b = rng.binomial(100, p)
...     return np.array([[100 - b, b, 0]])
>>> fired = [i for i in range(400) if t.add_block(block(0.10 if i < 300 else 0.25), learn=np.array([True]))]
>>> fired[0]   # the first batch after the change
309
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from scipy import special

from stream.monitoring.drift_stats import js_distance

__all__ = ["EntityCap", "EntityShareTest", "RunCap"]


class EntityCap:
    """Tumbling windows of ``window`` rows; per window, per entity, the first ``max_rows`` rows count."""

    def __init__(self, window: int, max_rows: int, default_share: float = 0.5) -> None:
        if window < 1 or max_rows < 1:
            raise ValueError(f"window ({window}) and max_rows ({max_rows}) must be positive")
        self.window, self.max_rows, self.default_share = int(window), int(max_rows), float(default_share)
        self._counts: dict[Hashable, int] = {}  # ids of the open window: at most ``window`` entries
        self._at = 0  # rows of the open window
        self._defaults: frozenset[Hashable] = frozenset()
        self.capped = 0  # rows left out of the category shares so far
        self.rows = 0  # rows seen so far

    def counted(self, entities: Sequence[Hashable | None]) -> np.ndarray:
        """For each row (in stream order), whether it counts in the category shares."""
        n = len(entities)
        out = np.ones(n, dtype=bool)
        cap, pos = self.max_rows, 0
        while pos < n:
            take = min(self.window - self._at, n - pos)
            counts, defaults = self._counts, self._defaults
            get = counts.get
            for i, e in enumerate(entities[pos : pos + take], pos):
                if e is None or e == "":
                    continue
                c = get(e, 0) + 1
                counts[e] = c
                if c > cap and e not in defaults:
                    out[i] = False
            pos += take
            self._at += take
            if self._at == self.window:
                limit = self.default_share * self.window
                self._defaults = frozenset(e for e, c in counts.items() if c > limit)
                self._counts, self._at = {}, 0
        self.capped += int(n - out.sum())
        self.rows += n
        return out


class RunCap:
    """Without entity ids: per categorical feature, a run of one value longer than chance gives
    counts only its first rows.

    A heavy entity's burst shows as a long run of its category. In rows drawn independently a
    value of share ``p`` runs past ``L`` rows with probability ``p**L``; the cap ``L`` of each
    value is the shortest run that chance makes as rare as ``tail`` (its reference share ``p``,
    at least ``min_run``, at most ``max_run``), so ordinary traffic is almost never capped
    (about ``tail`` of the cells) while a burst of 20-200 rows of a 10 % category counts 4.
    Runs continue across calls; the verdict is per cell (row and feature), in stream order.

    A feature with more than ``default_share`` of its cells past their cap over the previous
    ``window`` rows changes slowly by nature (an hour of the day in a stream in time order), not
    through bursts: it is not capped over the next window.

    Examples
    --------
    >>> cap = RunCap(np.array([[0.9, 0.1]]), tail=1e-4)   # one feature, a 90 % and a 10 % value
    >>> cap.limits.tolist()
    [[88, 4]]
    >>> cap.capped_cells(np.array([[1], [1], [1], [1], [1], [1], [0]])).ravel().tolist()
    [False, False, False, False, True, True, False]
    >>> bool(cap.capped_cells(np.array([[0]] * 87)).any()), cap.capped_cells(np.array([[0]])).tolist()
    (False, [[True]])

    An hour of the day, 24 values in runs of 800 rows: capped in the first window only.

    >>> hours = RunCap(np.full((1, 24), 1 / 24), tail=1e-4, window=2_000)
    >>> hour = np.repeat(np.arange(24), 800)[:, None]
    >>> [int(hours.capped_cells(hour[i : i + 2_000]).sum()) for i in range(0, 6_000, 2_000)]
    [1991, 0, 0]
    """

    def __init__(self, shares: np.ndarray, tail: float, min_run: int = 2, max_run: int = 1_000,
                 window: int = 10_000, default_share: float = 0.5) -> None:
        if not 0 < tail < 1 or window < 1:
            raise ValueError(f"tail ({tail}) must be in (0, 1) and window ({window}) positive")
        p = np.clip(np.asarray(shares, dtype=float), 1e-12, 1 - 1e-12)
        self.limits = np.clip(np.ceil(np.log(tail) / np.log(p)), min_run, max_run).astype(np.int64)
        fc = self.limits.shape[0]
        self.window, self.default_share = int(window), float(default_share)
        self._last = np.full(fc, -1, dtype=np.int64)  # value of the open run per feature
        self._len = np.zeros(fc, dtype=np.int64)  # its rows so far
        self._at = 0  # rows of the open window
        self._win = np.zeros(fc, dtype=np.int64)  # cells past their cap in the open window
        self._slow = np.zeros(fc, dtype=bool)  # features not capped (slow by nature) in this window

    def capped_cells(self, codes: np.ndarray) -> np.ndarray:
        """``codes[n, features]`` (value slots, as the limits'): which cells are past their run's cap."""
        n = codes.shape[0]
        out = np.zeros(codes.shape, dtype=bool)
        pos = 0
        while pos < n:
            take = min(self.window - self._at, n - pos)
            past = self._past_cap(codes[pos : pos + take])
            self._win += past.sum(axis=0)
            out[pos : pos + take] = past & ~self._slow
            pos += take
            self._at += take
            if self._at == self.window:
                self._slow = self._win > self.default_share * self.window
                self._win[:], self._at = 0, 0
        return out

    def _past_cap(self, codes: np.ndarray) -> np.ndarray:
        n, fc = codes.shape
        at = np.arange(n)[:, None]
        change = np.empty((n, fc), dtype=bool)
        np.not_equal(codes[0], self._last, out=change[0])
        np.not_equal(codes[1:], codes[:-1], out=change[1:])
        begin = np.where(change, at, -1)  # the row each run starts at, carried down its rows
        np.maximum.accumulate(begin, axis=0, out=begin)
        begin = np.where(begin >= 0, begin, -self._len)  # -1: rows continuing the previous call's run
        pos = at - begin  # rows of the run before this one
        self._last, self._len = codes[-1].copy(), pos[-1] + 1
        return pos >= self.limits[np.arange(fc), codes]


class EntityShareTest:
    """Per categorical feature: the shares of each batch of ``batch_blocks`` blocks (capped rows
    only) against the mean of the ``local`` batches just before it.

    A step of the category mix shows in full in the first batch after it, while the daily cycle
    and slow wander, which move neighbouring batches together, cancel (on a slow day the cycle
    does not: given each batch's hours and the capped shares' own daily profile, its move between
    the batches before and this one is taken out too). The noise is measured on
    the feature's own history (its last ``history`` batches learned out of drift): the mean
    square of the same difference there, at least this batch's binomial one times the history's
    overdispersion (each past difference over its own binomial variance); the statistic ``z`` per
    category is referred to Student t with as many degrees of freedom as differences,
    Bonferroni over categories and sides at ``alpha`` per batch, and an alarm also needs the
    Jensen-Shannon distance between the batch and that mean to reach ``js_threshold``. After a
    feature's drift closes (:meth:`reset`) its next ``local`` batches set its level again. A change slower than a
    few batches, or present from the start, is the reference-based tests' to find.
    """

    def __init__(self, n_features: int, n_slots: int, batch_blocks: int, history: int, min_batches: int,
                 alpha: float, js_threshold: float, leave_p: float = 0.05, local: int = 4,
                 hold_z: float = 3.0, max_jumps: float = 0.1) -> None:
        self.batch_blocks, self.history, self.local, self.hold_z = batch_blocks, history, local, hold_z
        self.max_jumps = max_jumps
        self.min_batches = max(min_batches, local + 3)
        self.alpha, self.js_threshold, self.leave_p = alpha, js_threshold, leave_p
        self._acc = np.zeros((n_features, n_slots + 1))  # the open batch: category slots + missing
        self._hacc = np.zeros(24)  # the open batch's rows per hour of the day (event time)
        self._blocks = 0
        self._hist = np.full((n_features, history, n_slots), np.nan)  # shares of past batches (ring)
        self._hist_hours = np.zeros((n_features, history, 24))  # and their rows' hours of the day, as shares
        self._count = np.zeros(n_features, dtype=np.int64)
        # squared differences of each learned batch against the L before it (ring), and their sum
        self._d2 = np.zeros((n_features, history, n_slots))
        self._d2_sum = np.zeros((n_features, n_slots))
        # and the same over their binomial variance (ring, sum): the overdispersion, which a batch
        # with fewer capped rows (a night hour, a burst capped away) has in its own binomial noise
        self._r2 = np.zeros((n_features, history, n_slots))
        self._r2_sum = np.zeros((n_features, n_slots))
        # learned batches that moved past twice the effect gate against their local mean (ring):
        # a feature whose mix moves by itself at this scale (an hour of the day, which fills a
        # batch or two per hour) is not tested, since its steps are its nature (the reference-based
        # tests, with the daily profile, watch it)
        self._jump = np.zeros((n_features, history), dtype=bool)
        self._pending_jump = np.zeros(n_features, dtype=bool)
        self._nd = np.zeros(n_features, dtype=np.int64)
        # A step inside a batch moves it part of the way; learned at once, that batch raised the
        # noise and the level the next batch is tested against, and a mid-batch step went unseen
        # where one on a boundary was found. So a batch's squared differences join the noise once
        # the next batch has opened no drift, and a batch past ``hold_z`` joins the level then too.
        self._pending = np.zeros((n_features, n_slots))
        self._pending_r = np.ones((n_features, n_slots))
        self._has_pending = np.zeros(n_features, dtype=bool)
        self._held = np.zeros((n_features, n_slots))
        self._held_hours = np.zeros((n_features, 24))
        self._has_held = np.zeros(n_features, dtype=bool)
        self._since = np.zeros(n_features, dtype=np.int64)  # batches learned since the start or a drift
        self._calm = np.ones(n_features, dtype=bool)
        self._crits: dict[tuple[int, int], float] = {}

    def calm(self, j: int) -> bool:
        """Whether feature ``j``'s last batch is back within the spread of the history it had
        before its drift opened (True without such a history): a drift found here, while the
        reference-based tests cannot see it yet, stays open until its level has returned."""
        return bool(self._calm[j])

    def reset(self, j: int) -> None:
        """Feature ``j``'s drift closed: its level may have moved within the spread it had, so its
        next ``local`` batches only set the level again; the noise of the step, a property of the
        traffic, is kept (testing resumes after ``local`` batches, not a whole warm-up: a false
        alarm of another test just before a real step does not blind this one)."""
        self._since[j] = 0
        self._calm[j] = True
        self._has_pending[j] = self._has_held[j] = False

    def add_block(self, counts: np.ndarray, learn: np.ndarray) -> list[tuple[int, dict[str, Any]]]:
        """One block's capped counts ``[feature, slot + missing]``; at a batch's end, the features
        whose shares moved, with their evidence. ``learn``: features whose batch joins the history."""
        done = self.batches(counts[None])
        return self.test_batch(done[0][1], learn) if done else []

    def batches(self, blocks: np.ndarray, hours: np.ndarray | None = None) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Consecutive blocks' counts ``[block, feature, slot + missing]`` (and rows per hour of the
        day, ``[block, 24]``) -> the batches they complete, as ``(index of the completing block,
        summed counts, rows per hour)``; the open batch carries over."""
        out, nb, i = [], len(blocks), 0
        while i < nb:
            take = min(self.batch_blocks - self._blocks, nb - i)
            self._acc += blocks[i : i + take].sum(axis=0)
            if hours is not None:
                self._hacc += hours[i : i + take].sum(axis=0)
            self._blocks += take
            i += take
            if self._blocks == self.batch_blocks:
                out.append((i - 1, self._acc, self._hacc))
                self._acc, self._hacc, self._blocks = np.zeros_like(self._acc), np.zeros(24), 0
        return out

    def test_batch(self, acc: np.ndarray, learn: np.ndarray, hours: np.ndarray | None = None,
                   daily: np.ndarray | None = None) -> list[tuple[int, dict[str, Any]]]:
        """A whole batch's counts: the features whose shares moved, with their evidence; then the
        batch joins the history of the features in ``learn``.

        ``hours``: the batch's rows per hour of the day; ``daily``: the capped shares' centred daily
        profile (``[24, feature * slot]``). The step is then the batch's move beyond what the
        profile expects between its hours and those of the batches before (the history keeps raw
        shares: a profile that changes applies to both sides at once)."""
        present = acc[:, :-1].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = acc[:, :-1] / present[:, None]
        hshare = np.zeros(24) if hours is None or not hours.any() else hours / hours.sum()
        seen = present > 0
        before = self._local_mean(self._hist)
        if daily is not None and hshare.any():  # the cycle's move from the batches before to this one
            past = self._local_mean(self._hist_hours)  # [feature, 24]
            cycle = np.einsum("fh,hfs->fs", hshare[None] - past, daily.reshape(24, *shares.shape))
            before = np.clip(before + cycle, 0.0, 1.0)
        jumps = self._jump.sum(axis=1)
        ready = ((self._nd >= self.min_batches - self.local) & (self._since >= self.local)
                 & (jumps <= self.max_jumps * np.minimum(self._nd, self.history)))
        out, top = self._tests(np.flatnonzero(ready & seen), shares, present, before)
        for j in np.flatnonzero(~learn & (self._count >= self.min_batches) & seen):
            self._calm[j] = self._near_history(int(j), shares[j], float(present[j]))
        quiet = learn.copy()
        quiet[[j for j, _ in out]] = False
        done = np.flatnonzero(quiet & self._has_pending)  # the previous batch: noise after all
        if len(done):
            slot = self._nd[done] % self.history
            self._d2_sum[done] += self._pending[done] - self._d2[done, slot]
            self._d2[done, slot] = self._pending[done]
            self._r2_sum[done] += self._pending_r[done] - self._r2[done, slot]
            self._r2[done, slot] = self._pending_r[done]
            self._jump[done, slot] = self._pending_jump[done]
            self._nd[done] += 1
        held = np.flatnonzero(quiet & self._has_held)
        self._learn(held, self._held[held], self._held_hours[held])
        self._has_pending[:] = self._has_held[:] = False
        js = np.flatnonzero(learn & seen)
        diff = js[(self._since[js] >= self.local) & quiet[js]]
        self._pending[diff] = (shares[diff] - before[diff]) ** 2
        self._pending_r[diff] = self._over_binomial(self._pending[diff], before[diff], present[diff])
        if len(diff):
            self._pending_jump[diff] = js_distance(before[diff], shares[diff]) >= 2 * self.js_threshold
        self._has_pending[diff] = True
        hold = js[(top[js] > self.hold_z) & quiet[js]]
        self._held[hold] = shares[hold]
        self._held_hours[hold] = hshare
        self._has_held[hold] = True
        now = js[~self._has_held[js]]
        self._learn(now, shares[now], hshare)
        return out

    def _learn(self, js: np.ndarray, shares: np.ndarray, hours: np.ndarray) -> None:
        """Batches' shares (and hours of the day) join the history (the level and the spread) of features ``js``."""
        self._hist[js, self._count[js] % self.history] = shares
        self._hist_hours[js, self._count[js] % self.history] = hours
        self._count[js] += 1
        self._since[js] += 1

    def _binomial(self, before: np.ndarray, present: np.ndarray) -> np.ndarray:
        """The binomial variance of a batch's shares (``present`` rows per feature) less the mean
        of the ``local`` batches before it, had they as many rows."""
        return before * (1.0 - before) / present * (1.0 + 1.0 / self.local)

    def _over_binomial(self, d2: np.ndarray, before: np.ndarray, present: np.ndarray) -> np.ndarray:
        """Squared differences over their binomial variance (1 where a category is too thin to say)."""
        binomial = self._binomial(before, present[:, None])
        thin = ~(before * present[:, None] >= 5)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(thin, 1.0, d2 / np.where(thin, 1.0, binomial))

    def _local_mean(self, ring: np.ndarray) -> np.ndarray:
        """Per feature, the mean over its last ``local`` learned batches of a history ring (``_hist``:
        their shares, NaN before it has them; ``_hist_hours``: their hours of the day)."""
        idx = (self._count[:, None] - self.local + np.arange(self.local)) % self.history
        with np.errstate(invalid="ignore"):
            return ring[np.arange(len(self._count))[:, None], idx].mean(axis=1)

    def _near_history(self, j: int, p: np.ndarray, n: float) -> bool:
        """Every share of this batch within the history's own spread (daily cycle included) at ``leave_p``."""
        h = min(int(self._count[j]), self.history)
        past = self._hist[j, :h]  # the ring's filled part (order does not matter here)
        mu = past.mean(axis=0)
        var = np.maximum(past.var(axis=0, ddof=1), mu * (1.0 - mu) / n)
        used = mu * n >= 5
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.abs(p - mu)[used] / np.sqrt(var[used])
        return bool(np.all(2.0 * special.stdtr(h - 1, -z) > self.leave_p))

    def _tests(self, js: np.ndarray, shares: np.ndarray, present: np.ndarray,
               before: np.ndarray) -> tuple[list[tuple[int, dict[str, Any]]], np.ndarray]:
        """The step test of features ``js``: this batch against ``before``, with the noise of that
        difference measured over the history (at least the binomial one); and per feature the
        largest ``|z|`` (0 where not tested)."""
        top_z = np.zeros(len(shares))
        if not len(js):
            return [], top_z
        L, p, n, b = self.local, shares[js], present[js][:, None], before[js]
        nd = np.minimum(self._nd[js], self.history)
        # the difference's noise: the history's mean square, and at least the binomial one of this
        # batch's rows times the overdispersion measured on the history (a batch of few rows is
        # noisier than the history's mean: a half-capped night batch opened false drifts)
        binomial = self._binomial(b, n)
        disp = np.maximum(self._r2_sum[js] / np.maximum(nd, 1)[:, None], 1.0)
        var = np.maximum(self._d2_sum[js] / np.maximum(nd, 1)[:, None], disp * binomial)
        used = b * n >= 5  # categories the capped traffic holds: unseen ones are the window tests' job
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(used, (p - b) / np.sqrt(var), 0.0)
        top = np.argmax(np.abs(z), axis=1)
        zt = np.abs(z[np.arange(len(js)), top])
        top_z[js] = zt
        out = []
        for r, n_used in enumerate(used.sum(axis=1).tolist()):
            dof = int(nd[r])
            if not n_used or zt[r] <= (crit := self._crit(dof, n_used)):
                continue
            effect = float(js_distance(b[r], p[r]))
            if effect < self.js_threshold:
                continue
            t = int(top[r])
            out.append((int(js[r]), {
                "test": "entity_share", "statistic": float(z[r, t]), "threshold": crit, "slot": t,
                "p_value": float(2.0 * special.stdtr(dof, -zt[r])), "alpha": self.alpha,
                "effect_metric": "jensen_shannon", "effect_size": effect, "effect_threshold": self.js_threshold,
                "n": int(n[r, 0]), "n_reference": int(L * n[r, 0]), "reference": "stream",
                "share": float(p[r, t]), "share_before": float(b[r, t])}))
        return out, top_z

    def _crit(self, dof: int, n_used: int) -> float:
        """Student t critical value, Bonferroni over ``n_used`` categories and both sides (cached:
        a few history lengths and category counts)."""
        key = (dof, n_used)
        if key not in self._crits:
            self._crits[key] = float(special.stdtrit(dof, 1.0 - self.alpha / (2 * n_used)))
        return self._crits[key]
