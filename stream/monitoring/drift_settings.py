"""The drift monitor's settings as a plain dataclass, apart from the statistics that use them,
so the settings object (:mod:`stream.config`) reads them without loading scipy."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DriftSettings"]


@dataclass(frozen=True)
class DriftSettings:
    """Settings of :class:`stream.monitoring.drift.DriftMonitor`; all plain values with defaults.

    Parameters
    ----------
    expected_run_length
        Target mean number of rows between false alarms, all tests together.
    block_size
        Rows per block; checks happen at block ends, so detection delays are
        rounded up to it.
    windows
        Sliding window lengths (multiples of ``block_size``), short ones for
        sharp changes, long ones for slight ones.
    checks_per_window
        Each window is tested every ``window / checks_per_window`` rows.
    wasserstein_threshold, psi_threshold, js_threshold, missing_threshold, correlation_threshold
        Enter levels of the effect sizes. Each test is gated by its own: KS and
        Mann-Whitney by the Wasserstein distance (normalised by the reference
        standard deviation), numeric chi-square by PSI or that distance, categorical chi-square
        by the Jensen-Shannon distance, the missing-rate test by the absolute
        change of the rate, the correlation test by the change of the correlation.
    leave_p
        A drift closes when every test of ``resolve_window`` has a p-value (on the same
        dependence-corrected scale as the enter tests) above this ...
    resolve_window, resolve_patience
        ... in window ``resolve_window`` for ``resolve_patience`` checks in a row.
    multivariate, multivariate_min_window
        Run the pairwise correlation test over the numeric features, in the
        windows at least this long.
    dependence_scales, dependence_history, dependence_min_batches, dependence_confidence
        The stream's own dependence (:class:`stream.monitoring.dependence.DependenceTracker`):
        batch lengths in blocks, batch means kept per scale, batches a scale needs before
        it counts (the monitor is warming up until the shortest has them), and the quantile
        of the long-run variance's sampling distribution used as its upper bound.
    dependence_scale_confidence
        The longest batch length's estimate counts only where its lower bound at this
        one-sided level is above the shorter lengths' estimates (Lepski's rule).
    refresh_blocks, mature_refresh_blocks
        The dependence, slow and seasonal estimates are refreshed every ``refresh_blocks``
        blocks (between refreshes the checks of many blocks are computed at once); more often
        during the warm-up and, on traffic with runs of one entity, while the estimates are
        young; every ``mature_refresh_blocks`` (a multiple of it) once every dependence scale
        can have its batches (see ``StreamEstimates._refresh_period``).
    min_effective_rows
        A score is tested in a window only when the window holds at least this many
        effectively independent rows (rows / design effect): a 500-row window filled by
        two bursts of one entity is not a sample of the traffic.
    cusum, cusum_blocks, cusum_k, cusum_clip, cusum_min_shift
        Two-sided CUSUM (:mod:`stream.monitoring.cusum`) on batch means of ``cusum_blocks``
        blocks of each feature's mid-rank, category shares and missing rates, standardised with
        the measured variances and clipped at +-``cusum_clip`` (one burst moves it a bounded step);
        reference value ``cusum_k`` (sd of a batch mean); an alarm also
        needs the run's mean shift to reach ``cusum_min_shift`` score sd, and a category's
        share (or a block's mix, in Cohen's w) what the chi-square's Jensen-Shannon gate asks
        of it (``js_threshold * sqrt(8 ln 2)`` sd: 0.24 by default). Windows and CUSUM
        share the false-alarm budget half and half.
    cusum_second_moment_weight
        Each numeric feature's spread (Klotz's squared normal score, its variance at least its
        mid-rank's design effect's) and each numeric pair's linearised correlation also run the
        batch CUSUM; a side of one weighs this much of another channel's side in that CUSUM's
        budget (weighted Bonferroni: the mid-ranks and shares keep nearly all of theirs). 0
        leaves them to the window tests on dependent traffic.
    cusum_long_design, cusum_long_batches
        A share (category or missing rate) whose measured design effect passes
        ``cusum_long_design`` runs its CUSUM on batches ``cusum_long_batches`` times longer (the
        same false-alarm rate per row): a CUSUM's alarm level assumes near-normal batch means,
        and a batch holding one or two bursts of one entity is not (a burst of a category jumps
        its share up, never down).
    entity_window, entity_max_rows, entity_batch_blocks, entity_history, entity_min_batches, entity_share_budget
    entity_seasonal_min_rows
        Given entity ids (``update_batch(..., entities=)``), an entity-balanced share test per
        categorical feature (:mod:`stream.monitoring.entity_shares`: a heavy entity's burst
        repeats its own category): one entity counts at most ``entity_max_rows`` rows of every
        ``entity_window``; each batch of ``entity_batch_blocks`` blocks is tested against the
        batches just before it, with the noise measured on the last ``entity_history`` batches
        (from ``entity_min_batches`` on); it takes
        ``entity_share_budget`` of the false-alarm budget. ``entity_max_rows = 0`` turns it off.
        When more than ``entity_clustered`` of the rows are past their entity's cap (runs of one
        entity), the window tests wait for twice the warm-up: dependence as long as a run is not
        measurable from the first few. Without entity ids, runs stand for them: a run of one
        value of a categorical feature longer than independent rows give with probability
        ``entity_run_tail`` (from the value's reference share) counts only its first rows
        (:class:`stream.monitoring.entity_shares.RunCap`; 0 turns this off). The reference-based
        tests count every row; a share bursty
        enough for long batches leaves
        the batch CUSUMs to this test (summed against the reference, the bursts' skew alone
        opened false drifts). The capped shares learn their own daily profile, used once every
        hour has ``entity_seasonal_min_rows`` capped rows (fewer than the whole traffic's
        ``seasonal_min_rows``: capped rows are nearly independent, and a slow day with quiet
        nights waited 20+ days for 2,000 in every hour while the cycle hid a step).
    cusum_block, cusum_block_k, cusum_block_max_design, cusum_block_share
        A second CUSUM on single blocks, for sharp changes on traffic whose rows are nearly
        independent: it watches a channel only while its measured design effect is at most
        ``cusum_block_max_design`` and its slow wander adds at most a quarter to a block's
        variance (otherwise neighbouring blocks are not independent and only the batch CUSUM
        runs) and, for an indicator, its block count is near normal (10 effective rows on either
        side); a spread (Klotz's squared normal score of the mid-rank) only while its mid-rank is
        in that regime too. Reference value ``cusum_block_k``; a block statistic is clipped at
        twice it, a mid-rank's (a mean of bounded, symmetric scores) at ``k + h + 1``, so one
        block far enough out alarms by itself. Beside it, each categorical feature's mix of one
        block (Pearson's X^2 over the reference's categories, Rao-Scott, Wilson-Hilferty normal;
        every category expecting 5 effective rows) runs a one-sided CUSUM at the same level. It
        takes ``cusum_block_share`` of the CUSUMs' half of the false-alarm budget.
    seasonal, seasonal_min_rows, seasonal_memory_rows, seasonal_alpha, seasonal_reference_min_rows
        Learn a daily profile from event times (:class:`stream.monitoring.seasonal.SeasonalProfile`):
        rows every hour of the day needs before it is used, rows of memory per hour, and
        the level at which hours must differ for the profile to be taken out. A reference
        profile built with event times starts it: usable from the first row when every hour
        has ``seasonal_reference_min_rows`` reference rows.
    summary_window, summary_quantiles, summary_top_categories
        Rolling summary statistics (:func:`stream.monitoring.drift_view.summary`): rows,
        quantiles of numeric features, categories shown.
    score_feature
        Name of the model score column; its drift is reported as ``score_drift``.
    score_detector
        ``None``, ``"page_hinkley"`` or ``"adwin"``: also run this river detector
        (default parameters) on the score, row by row. Off by default because
        its false-alarm rate is not calibrated.
    emit_resolved
        Emit ``drift_resolved`` events when a drift closes.
    """

    expected_run_length: int = 10_000_000
    block_size: int = 100
    windows: tuple[int, ...] = (500, 2000, 4000, 8000, 32000)
    checks_per_window: int = 5
    wasserstein_threshold: float = 0.07
    psi_threshold: float = 0.07
    js_threshold: float = 0.1
    missing_threshold: float = 0.05
    correlation_threshold: float = 0.2
    leave_p: float = 0.01
    resolve_window: int = 2000
    resolve_patience: int = 3
    multivariate: bool = True
    multivariate_min_window: int = 0
    dependence_scales: tuple[int, ...] = (2, 8, 32)
    dependence_history: int = 128
    dependence_min_batches: int = 16
    dependence_confidence: float = 0.25
    dependence_scale_confidence: float = 0.1
    min_effective_rows: int = 200
    refresh_blocks: int = 64
    mature_refresh_blocks: int = 128
    cusum: bool = True
    cusum_blocks: int = 8
    cusum_k: float = 1.0
    cusum_clip: float = 3.0
    cusum_min_shift: float = 0.1
    cusum_second_moment_weight: float = 0.25
    cusum_long_design: float = 4.0
    cusum_long_batches: int = 4
    entity_window: int = 1_000
    entity_max_rows: int = 3
    entity_batch_blocks: int = 8
    entity_history: int = 64
    entity_min_batches: int = 16
    entity_share_budget: float = 0.1
    entity_clustered: float = 0.02
    entity_run_tail: float = 1e-4
    entity_seasonal_min_rows: int = 500
    cusum_block: bool = True
    cusum_block_k: float = 2.0
    cusum_block_max_design: float = 2.0
    cusum_block_share: float = 0.2
    seasonal: bool = True
    seasonal_min_rows: int = 2000
    seasonal_memory_rows: int = 5_000_000
    seasonal_alpha: float = 0.01
    seasonal_reference_min_rows: int = 200
    summary_window: int = 8000
    summary_quantiles: tuple[float, ...] = (0.05, 0.5, 0.95)
    summary_top_categories: int = 5
    score_feature: str = "score"
    score_detector: str | None = None
    emit_resolved: bool = True

    def steps(self) -> tuple[int, ...]:
        """Rows between two checks of each window (a multiple of ``block_size``)."""
        b = self.block_size
        return tuple(max(b, (w // self.checks_per_window) // b * b) for w in self.windows)

    def validate(self) -> None:
        if self.expected_run_length <= 1:
            raise ValueError("expected_run_length must be > 1")
        if self.block_size < 1 or not self.windows:
            raise ValueError("block_size must be >= 1 and windows non-empty")
        if any(w % self.block_size or w <= 0 for w in self.windows):
            raise ValueError("every window must be a positive multiple of block_size")
        if list(self.windows) != sorted(set(self.windows)):
            raise ValueError("windows must be strictly increasing")
        if self.resolve_window not in self.windows:
            raise ValueError("resolve_window must be one of windows")
        if not 0 < self.leave_p < 1 or self.resolve_patience < 1 or self.checks_per_window < 1:
            raise ValueError("need 0 < leave_p < 1, resolve_patience >= 1, checks_per_window >= 1")
        if self.score_detector not in (None, "page_hinkley", "adwin"):
            raise ValueError(f"unknown score_detector {self.score_detector!r}")
        if not self.dependence_scales or min(self.dependence_scales) < 1 or not 0 < self.dependence_confidence < 1 \
                or not 0 < self.dependence_scale_confidence < 1:
            raise ValueError("dependence_scales must be >= 1, 0 < dependence_confidence < 1 and "
                             "0 < dependence_scale_confidence < 1")
        if not 4 <= self.dependence_min_batches <= self.dependence_history:
            raise ValueError("need 4 <= dependence_min_batches <= dependence_history")
        if self.cusum_blocks < 1 or self.cusum_k <= 0 or self.cusum_min_shift < 0 or self.cusum_second_moment_weight < 0:
            raise ValueError("need cusum_blocks >= 1, cusum_k > 0, cusum_min_shift >= 0, cusum_second_moment_weight >= 0")
        if self.cusum_long_design < 1 or self.cusum_long_batches < 1:
            raise ValueError("need cusum_long_design >= 1 and cusum_long_batches >= 1")
        if self.cusum_block_k <= 0 or self.cusum_block_max_design < 1 or not 0 < self.cusum_block_share < 1:
            raise ValueError("need cusum_block_k > 0, cusum_block_max_design >= 1, 0 < cusum_block_share < 1")
        if self.entity_window < 1 or self.entity_max_rows < 0 or self.entity_batch_blocks < 1:
            raise ValueError("need entity_window >= 1, entity_max_rows >= 0 and entity_batch_blocks >= 1")
        if not 3 <= self.entity_min_batches <= self.entity_history or not 0 <= self.entity_share_budget < 1:
            raise ValueError("need 3 <= entity_min_batches <= entity_history and 0 <= entity_share_budget < 1")
        if not 0 <= self.entity_clustered <= 1 or not 0 <= self.entity_run_tail < 1:
            raise ValueError("need 0 <= entity_clustered <= 1 and 0 <= entity_run_tail < 1")
        if self.entity_seasonal_min_rows < 1:
            raise ValueError("entity_seasonal_min_rows must be >= 1")
        if self.refresh_blocks < 1 or self.min_effective_rows < 1:
            raise ValueError("refresh_blocks and min_effective_rows must be >= 1")
        if self.mature_refresh_blocks < self.refresh_blocks or self.mature_refresh_blocks % self.refresh_blocks:
            raise ValueError("mature_refresh_blocks must be a multiple of refresh_blocks")
        if self.summary_window < self.block_size or not all(0 < q < 1 for q in self.summary_quantiles):
            raise ValueError("summary_window must be >= block_size and quantiles in (0, 1)")
