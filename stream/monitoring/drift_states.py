"""The drift monitor's per-feature state machine: when a drift opens, what it reports, when it closes.

A feature (or the numeric pairs' joint state, ``MULTIVARIATE``) opens when one of its
tests passes its critical value *and* its effect size its enter level, on a window it has
been out of drift for; the evidence of every such test goes into the event. It closes
(``drift_resolved``) after ``resolve_patience`` calm checks in a row of its resolve window.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

from stream.monitoring.drift_event import MULTIVARIATE, DriftEvent, finite
from stream.monitoring.drift_windows import WindowTests

__all__ = ["FeatureStates"]


class FeatureStates(WindowTests):
    """Opening and closing of per-feature drift states over the window tests' statistics."""

    def _groups(self) -> list[tuple[str, list[str], int]]:
        if not hasattr(self, "_groups_cache"):  # fixed by the profile; read at every firing check
            out = [("num", self._num, 0), ("cat", self._cat, len(self._num))]
            self._groups_cache = out + ([("mv", [f"{self._num[i]}|{self._num[j]}"
                                                 for i, j in zip(*self._pairs, strict=True)], -1)] if self._mv else [])
        return self._groups_cache

    def _fire(self, w: int, last: dict[str, Any], fired: dict[str, list[dict[str, Any]]]) -> None:
        for group, names, _off in self._groups():
            st = last[group]
            if not names or not st:
                continue
            crit = self.crit(w, group, st)
            owners = [MULTIVARIATE] * len(names) if group == "mv" else names
            valid = np.array([self._blocks - self._reset_at[o] >= self._wblocks[w] and not self._open[o] for o in owners])
            marg = self._pairs_in_drift() if group == "mv" else None
            if marg is not None:  # a feature in drift is reported: a stuck x or x in new units break
                valid &= ~marg    # its correlations too, which would name it a second time
            sig = {t: (st[t] > crit[t]) & valid for t in crit}
            if not any(m.any() for m in sig.values()):
                continue
            eff = self.gated_effects(w, group)
            for t, m in sig.items():
                for j in np.flatnonzero(m & self.passes_gate(group, t, eff)):
                    fired.setdefault(owners[j], []).append(self._evidence(w, group, t, int(j), names[j], st, crit, eff))

    def _evidence(self, w: int, group: str, test: str, j: int, name: str, st: dict[str, Any],
                  crit: dict[str, np.ndarray], eff: dict[str, np.ndarray]) -> dict[str, Any]:
        metric, thr = self.gate_of(group, test, eff, j)
        stat, c = float(st[test][j]), float(crit[test][j])
        n_key = "n_rows" if test == "missing" else "n"
        ev = {"feature": name, "test": test, "statistic": finite(stat), "threshold": finite(c),
              "alpha": self.calibration.alpha_pair[w] if group == "mv" else self.calibration.alpha_feature[name][w],
              "p_value": self.p_value(group, test, stat, st, j), "effect_metric": metric,
              "effect_size": finite(eff[metric][j]), "effect_threshold": thr, "window": self.settings.windows[w],
              "n": int(st[n_key][j]), "reference": "profile", "n_reference": int(self._n_reference(group, test, j)),
              "design_effect": finite(st["design_effect"][j])}
        if group == "mv":
            i1, i2 = self._pairs[0][j], self._pairs[1][j]
            ev.update(r=finite(self._last[w]["r"][i1, i2]), r_reference=finite(self._rho[i1, i2]))
        elif metric != "psi" and test != "missing":
            ev["psi"] = finite(eff["psi"][j])
        return ev

    def _n_reference(self, group: str, test: str, j: int) -> float:
        if group == "mv":
            return float(self.ref.corr_n[self._pairs[0][j], self._pairs[1][j]])
        counts, miss = ((self.ref.num_counts, self.ref.num_missing) if group == "num"
                        else (self.ref.cat_counts, self.ref.cat_missing))
        return float(counts[j].sum() + (miss[j] if test == "missing" else 0))


    def _calm_window(self, name: str) -> int:
        """The window that decides whether ``name``'s drift is over: ``resolve_window``, or the
        shortest longer one with enough effectively independent rows."""
        group, j = self._locate(name)
        for w in range(self._resolve_w, len(self.settings.windows)):
            st = self._last.get(w, {}).get(group)
            if st and not (st["thin"][self._open_pairs()].any() if group == "mv" else self._thin(st, j)):
                return w
        return len(self.settings.windows) - 1

    @staticmethod
    def _thin(st: Any, j: int) -> bool:
        """Too few effectively independent rows for feature ``j``'s tests, or for its missing-rate
        test alone: missing values that appear in a feature that had none (0 -> 20 %) have no
        dependence measured yet, the test was dropped as thin, read p = 1, and the drift closed
        3,500 rows in and opened again 5,600 rows later."""
        return bool(st["thin"][j] or st["missing_thin"][j])

    def _open_pairs(self) -> np.ndarray:
        """The pairs of the joint state's open features: the ones whose windows decide its close."""
        feats = set(self._open_features.get(MULTIVARIATE, self._num))
        return np.array([self._num[i] in feats and self._num[k] in feats
                         for i, k in zip(*self._pairs, strict=True)], dtype=bool)

    def _pairs_in_drift(self) -> np.ndarray | None:
        """Pairs with a feature in drift (None: none): they sit out, as the feature does. A pair's
        linearised correlation is taken against the reference's marginals, so it moves with such a
        feature (amounts x1.5 opened and closed the joint state every ~10,000 rows through it while
        their correlation with x never changed); and the feature's drift, already reported, is
        not reported again as its pairs' (x stuck at one value gave a second event for x and y)."""
        if not self._pairs[0].size or not self._open_arr[: len(self._num)].any():
            return None
        return self._open_arr[self._pairs[0]] | self._open_arr[self._pairs[1]]

    def _sitting_out(self) -> np.ndarray:
        """Channels not learned from (nor summed by the CUSUMs): an open state's, and the
        correlations of pairs with a feature in drift."""
        out = self._open_arr[self._owner]
        marg = self._pairs_in_drift()
        if marg is not None:
            out[self._sl["psi"]] |= marg
        return out

    def _locate(self, name: str) -> tuple[str, int]:
        if name == MULTIVARIATE:
            return "mv", 0
        return ("num", self._num.index(name)) if name in self.profile.numeric else ("cat", self._cat.index(name))

    def _calm_now(self, name: str, w: int) -> bool:
        leave = self.settings.leave_p
        group, j = self._locate(name)
        if self._hold is not None and self._hold.holding(self._owner == self._state_index[name]):
            return False  # its batches still show the shift: a drift that shrank, not one that ended
        st = self._last.get(w, {}).get(group)
        if not st:
            return False
        if group == "mv":
            # a pair with too few effective rows has no test (statistic 0): that is no sign the
            # correlation came back (a 0.6 -> 0 drift on AR traffic, D ~ 33 at 2,000 rows, closed
            # 1,200 rows after it opened and opened again 8,400 later, over and over)
            thin = st["thin"]
            if thin[self._open_pairs()].any():
                return False
            return bool(np.all(2.0 * special.ndtr(-st["correlation"][~thin]) > leave))
        if self._thin(st, j):
            return False
        tests = ("ks", "mannwhitney", "chi2", "missing") if group == "num" else ("chi2", "missing")
        if group == "cat" and self._eshare is not None and not self._eshare.calm(j):
            return False  # the entity-balanced shares still away from where they were
        return all(self.p_value(group, t, float(st[t][j]), st, j) > leave for t in tests)

    def _transition(self, index: int, fired: dict[str, list[dict[str, Any]]]) -> list[DriftEvent]:
        if not fired and not self._open_arr.any():  # the usual block: nothing to open, nothing to close
            return []
        opened: dict[str, list[str]] = {}
        evidence: dict[str, list[dict[str, Any]]] = {}
        windows: dict[str, int] = {}  # the states that open: their detecting window
        sat_out = self._sitting_out() if fired else None
        for name in self._states if fired else ():
            if name in fired and not self._open[name]:
                self._set_open(name, True)
                windows[name] = max((int(e.get("window") or 0) for e in fired[name]), default=0) or self.settings.windows[-1]
                kind = ("multivariate_drift" if name == MULTIVARIATE else
                        "score_drift" if name == self.settings.score_feature else "data_drift")
                feats = ([f for f in dict.fromkeys(p for e in fired[name] for p in e["feature"].split("|"))]
                         if name == MULTIVARIATE else [name])
                opened.setdefault(kind, []).extend(feats)
                self._open_features[name] = feats
                evidence.setdefault(kind, []).extend(fired[name])
        if windows:
            self._forget_onset(windows, sat_out)
        closed = []
        # no calm check is due at this block in any window a state may close on: skip the look-ups
        rw0 = self._resolve_w
        due = any(self._blocks % st == 0 and self._blocks >= nb
                  for st, nb in zip(self._sblocks[rw0:], self._wblocks[rw0:], strict=True))
        for name in self._states if due else ():
            if not self._open[name] or name in fired:
                continue
            rw = self._calm_window(name)
            if self._blocks % self._sblocks[rw] or self._blocks < self._wblocks[rw] or not self.tracker.ready():
                continue
            self._calm[name] = self._calm[name] + 1 if self._calm_now(name, rw) else 0
            if self._calm[name] >= self.settings.resolve_patience:
                self._set_open(name, False)
                self._reset_at[name] = self._blocks
                closed.append(name)
        events = [self._event(index, kind, tuple(opened[kind]), tuple(evidence[kind]))
                  for kind in ("data_drift", "score_drift", "multivariate_drift") if kind in opened]
        if closed and self.settings.emit_resolved:
            names = tuple(dict.fromkeys(f for n in closed for f in self._open_features.pop(n, [n])))
            events.append(self._event(index, "drift_resolved", names, ()))
        return events

    def _forget_onset(self, windows: dict[str, int], sat_out: Any) -> None:
        """Roll back what the channels that now sit out learned since the change began (see
        :mod:`stream.monitoring.onset`): a window fires once about half its rows are past the
        change, or, too thin to be tested before, up to a window later; the pairs that sit out
        with a feature that opened go back as far as the widest of those windows."""
        newly = self._sitting_out() & ~sat_out
        rows, rest = self._blocks * self.settings.block_size, newly.copy()
        for name, window in windows.items():
            own = newly & (self._owner == self._state_index[name])
            self._onset.roll_back(own, rows - 2 * window, self._blocks)
            rest &= ~own
        self._onset.roll_back(rest, rows - 2 * max(windows.values()), self._blocks)

    def _set_open(self, name: str, state: bool) -> None:
        self._open[name], self._calm[name] = state, 0
        j = self._state_index[name]
        self._open_arr[j] = state
        self._fast_live = None  # the block CUSUM's channels change with the states
        for cus in (self._cusum, self._cusum_long, self._fast, self._hold):  # its CUSUMs start afresh
            if cus is not None:
                cus.reset(self._owner == j)
        if self._mix is not None and name in self._cat:
            self._mix.reset(np.array([c == name for c in self._cat]))
        if not state and self._eshare is not None and name in self._cat:  # its own level may have moved
            self._eshare.reset(self._cat.index(name))

    def _event(self, index: int, kind: str, feats: tuple[str, ...], ev: tuple[dict[str, Any], ...]) -> DriftEvent:
        return DriftEvent(index, kind, feats, ev, self.model_name, self.model_version)

