"""The state a :class:`stream.monitoring.drift.DriftMonitor` holds, declared once for all its parts.

The monitor is assembled from parts in their own modules, each a class adding methods
over this state: the window tests (:mod:`stream.monitoring.drift_windows`), the
per-feature state machine (:mod:`stream.monitoring.drift_states`), the sequential
detectors (:mod:`stream.monitoring.drift_sequential`) and row ingestion
(:mod:`stream.monitoring.drift_ingest`). :class:`MonitorCore` only declares the
attributes they share (set in ``DriftMonitor.__init__``), so each part type-checks alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from stream.monitoring.calibration import Calibration, DriftSettings
from stream.monitoring.cusum import Cusum, Hold
from stream.monitoring.dependence import DependenceTracker
from stream.monitoring.entity_runs import EntityRuns
from stream.monitoring.entity_shares import EntityCap, EntityShareTest, RunCap
from stream.monitoring.onset import Checkpoints
from stream.monitoring.profile import ReferenceArrays, ReferenceProfile
from stream.monitoring.seasonal import SeasonalProfile, WithinHour

if TYPE_CHECKING:
    from stream.monitoring.drift_event import DriftEvent

__all__ = ["MonitorCore"]


class MonitorCore:
    """Attributes of a drift monitor (see :class:`stream.monitoring.drift.DriftMonitor`)."""

    # the reference and the settings
    profile: ReferenceProfile
    settings: DriftSettings
    calibration: Calibration
    model_name: str | None
    model_version: str | None
    ref: ReferenceArrays
    _num: list[str]
    _cat: list[str]
    _names: list[str]
    _states: list[str]  # _names, then MULTIVARIATE: the owners of the channels
    _state_index: dict[str, int]
    _mv: bool
    _edges: list[np.ndarray]
    _edge_rows: np.ndarray  # [edge, feature], NaN past a feature's own: bins as counts of edges
    _k: int
    _kc: int
    _score_table: np.ndarray  # the bins' normal scores flat, a zero for the missing bin
    _score_at: np.ndarray
    _value_lo: np.ndarray  # the reach of a value in the running sums
    _value_hi: np.ndarray
    _cat_maps: list[dict[Any, int]]
    _cat_other: list[int]
    _pairs: tuple[np.ndarray, np.ndarray]
    _rho: np.ndarray  # the reference's correlations (within the hour when features follow the day)
    _within: WithinHour | None
    # score channels: reference means, per-row variances and sizes, their slices and owners
    _uref: np.ndarray
    _sl: dict[str, slice]
    _owner: np.ndarray
    _indicator: np.ndarray  # channels that are shares (bins, categories, missing)
    _m: np.ndarray
    _theta: np.ndarray
    _g0: np.ndarray
    # windows, running totals and their ring
    _wblocks: list[int]
    _wblocks_arr: np.ndarray
    _sblocks: list[int]
    _resolve_w: int
    _ring_len: int
    _tot: dict[str, np.ndarray]
    _ring: dict[str, np.ndarray]
    _blocks: int
    rows_seen: int
    _buf_num: np.ndarray
    _buf_cat: np.ndarray
    _buf_ts: np.ndarray
    entity_cap: EntityCap | None
    run_cap: RunCap | None
    _eshare: EntityShareTest | None
    _entities_given: bool
    _runs_clustered: bool
    _clustered_estimated: bool
    entity_runs: EntityRuns | None
    _cat_chance: np.ndarray
    _run_figures: tuple[float, np.ndarray]
    _capped_tally: int
    _rows_tally: int
    _ref_cat: np.ndarray  # reference counts per categorical feature: category slots, then missing
    _buf_len: int
    # the stream's dependence and seasonal estimates
    tracker: DependenceTracker
    seasonal: SeasonalProfile | None
    _onset: Checkpoints
    _next_checkpoint: int
    _ready: bool
    _cusum_ready: bool
    _fast_ready: bool
    _season_dev: np.ndarray | None
    _season_var: np.ndarray | None
    _visit_rows: np.ndarray  # [24]: live rows per visit of each hour of the day
    _presence: np.ndarray | None  # [24, channel]: share of an hour's rows holding the channel's value
    _lr: np.ndarray
    _g0_live: np.ndarray
    _slow: np.ndarray
    _psi_skew: np.ndarray  # [dependence scale, pair]: skewness of the correlations' batch means
    _wconst: dict[str, Any] | None
    # per-feature drift states and the latest statistics per window
    _reset_at: dict[str, int]
    _open: dict[str, bool]
    _open_arr: np.ndarray
    _groups_cache: list[tuple[str, list[str], int]]
    _calm: dict[str, int]
    _last: dict[int, dict[str, Any]]
    _open_features: dict[str, list[str]]
    # sequential detectors: the CUSUM over batches of blocks and the optional river score detector
    _cusum: Cusum | None
    _cus_mask: np.ndarray
    _second: np.ndarray  # spreads and the pairs' correlations: a share of a side in the budget
    _cus_erl: float  # the batch CUSUMs' false-alarm budget, in rows between alarms
    _fast_candidates: np.ndarray
    _cus_sum: np.ndarray
    _cus_w: np.ndarray
    _cus_hours: np.ndarray
    _cus_nblk: int
    _cusum_long: Cusum | None
    _hold: Hold | None  # keeps an open drift open while its batches still show the shift
    _long_mask: np.ndarray
    _window_known: list[bool]
    _window_scale: list[int]
    _clustered: bool
    _cus_off: np.ndarray
    _min_shift: np.ndarray
    _share_shift: float
    _shares: np.ndarray
    _long_acc: list[Any]
    _fast: Cusum | None
    _fast_mask: np.ndarray
    _fast_live: np.ndarray | None
    _mix: Cusum | None
    _score_j: int
    _detector: Any

    if TYPE_CHECKING:
        def _process(self, num: np.ndarray, cat: np.ndarray, ts: np.ndarray, start: int) -> list[DriftEvent]: ...
        def capped_rows(self) -> tuple[int, int]: ...
        def _share_test_fed(self) -> bool: ...
        def _count_capped(self, crows: np.ndarray | None, i: int) -> tuple[bool, bool]: ...

    def _share_variance_ratio(self, adj: np.ndarray) -> np.ndarray:
        """Per channel, a share's per-row variance in hours that move it by ``adj`` over the day's,
        at least 1 (quiet hours make no test keener); 1 for channels that are not shares."""
        ph = np.clip(self._theta + adj, 0.0, 1.0)
        return np.where(self._indicator, np.maximum(ph * (1.0 - ph) / self._g0, 1.0), 1.0)
