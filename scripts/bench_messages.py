"""Encode/decode cost of one prediction and one 2,000-row feature batch with three record
libraries (the measurement behind stream/messages.py): .venv/bin/python scripts/bench_messages.py"""
import dataclasses, timeit, sys
import numpy as np, orjson, msgspec, pydantic
from stream.messages import FeatureBatch, decode
# Best of 15 repeats; on a shared machine the rows still move by +-30%: compare within a run.

N = 2000
rng = np.random.default_rng(0)
ids = [f"e{i:08d}" for i in range(N)]
keys = [f"u{i % 500}" for i in range(N)]
scores = rng.random(N)
ingest = np.arange(N, dtype=np.int64) + 1_700_000_000_000
event_ts = np.arange(N, dtype=np.float64) + 1_700_000_000.0
num = rng.normal(size=N); num[::50] = np.nan
cat = rng.choice(["fuel", "grocery", "travel"], N).tolist()
cols = {f"n{i}": num for i in range(6)} | {f"c{i}": cat for i in range(3)}
s = scores.tolist(); ing = ingest.tolist()

def best(stmt, number):
    return min(timeit.repeat(stmt, number=number, repeat=15)) / number

# --- prediction: per-batch loop of N predictions, per-prediction cost reported
def today():
    dumps = orjson.dumps
    return [dumps({"event_id": ids[i], "entity_id": keys[i], "score": s[i], "model": "fraud",
                   "model_version": "1", "ingest_ts_ms": ing[i], "scored_ts_ms": 1}) for i in range(N)]

@dataclasses.dataclass(slots=True)
class PredDC:
    event_id: str; entity_id: str; score: float; model: str; model_version: str; ingest_ts_ms: int; scored_ts_ms: int
def dc():
    dumps = orjson.dumps
    return [dumps(PredDC(ids[i], keys[i], s[i], "fraud", "1", ing[i], 1)) for i in range(N)]

class PredMS(msgspec.Struct):
    event_id: str; entity_id: str; score: float; model: str; model_version: str; ingest_ts_ms: int; scored_ts_ms: int
enc = msgspec.json.Encoder()
def ms():
    e = enc.encode
    return [e(PredMS(ids[i], keys[i], s[i], "fraud", "1", ing[i], 1)) for i in range(N)]

class PredPD(pydantic.BaseModel):
    event_id: str; entity_id: str; score: float; model: str; model_version: str; ingest_ts_ms: int; scored_ts_ms: int
def pd_():
    return [PredPD(event_id=ids[i], entity_id=keys[i], score=s[i], model="fraud", model_version="1",
                   ingest_ts_ms=ing[i], scored_ts_ms=1).model_dump_json().encode() for i in range(N)]
def pd_construct():
    return [PredPD.model_construct(event_id=ids[i], entity_id=keys[i], score=s[i], model="fraud", model_version="1",
                   ingest_ts_ms=ing[i], scored_ts_ms=1).model_dump_json().encode() for i in range(N)]

assert today()[0] == dc()[0] == ms()[0], (today()[0], ms()[0])
print("prediction encode, ns per prediction (loop over 2,000)")
for name, f in [("orjson dict (today)", today), ("dataclass+orjson", dc), ("msgspec Struct", ms),
                ("pydantic v2 validate+dump", pd_), ("pydantic v2 construct+dump", pd_construct)]:
    print(f"  {name:28s} {best(f, 20) / N * 1e9:8.0f}")

raw = today()[0]
dec_ms = msgspec.json.Decoder(PredMS)
ta = pydantic.TypeAdapter(PredDC)
print("prediction decode, ns per prediction")
for name, stmt in [("orjson.loads -> dict", lambda: orjson.loads(raw)),
                   ("orjson.loads -> dataclass(**)", lambda: PredDC(**orjson.loads(raw))),
                   ("msgspec typed decode", lambda: dec_ms.decode(raw)),
                   ("pydantic model_validate_json", lambda: PredPD.model_validate_json(raw))]:
    print(f"  {name:28s} {best(stmt, 20000) * 1e9:8.0f}")

# --- feature batch
def fb_orjson():
    c = {k: v if isinstance(v, np.ndarray) else list(v) for k, v in cols.items()}
    return orjson.dumps({"partition": 0, "model": "fraud", "model_version": "1", "event_ids": ids,
                         "ingest_ts_ms": ingest, "event_ts": event_ts, "scores": scores, "columns": c},
                        option=orjson.OPT_SERIALIZE_NUMPY)

@dataclasses.dataclass(slots=True)
class FBDC:
    partition: int; model: str; model_version: str; event_ids: list; ingest_ts_ms: object; event_ts: object; scores: object; columns: dict
def fb_dc():
    return orjson.dumps(FBDC(0, "fraud", "1", ids, ingest, event_ts, scores,
                             {k: v if isinstance(v, np.ndarray) else list(v) for k, v in cols.items()}),
                        option=orjson.OPT_SERIALIZE_NUMPY)

class FBMS(msgspec.Struct):
    partition: int; model: str; model_version: str; event_ids: list[str]; ingest_ts_ms: list[int]; event_ts: list[float]
    scores: list[float]; columns: dict[str, list[float | str | None]]
def fb_ms_tolist():
    return enc.encode(FBMS(0, "fraud", "1", ids, ingest.tolist(), event_ts.tolist(), scores.tolist(),
                           {k: v.tolist() if isinstance(v, np.ndarray) else list(v) for k, v in cols.items()}))
enc_np = msgspec.json.Encoder(enc_hook=lambda o: o.tolist() if isinstance(o, np.ndarray) else (_ for _ in ()).throw(NotImplementedError))

class FBPD(pydantic.BaseModel):
    partition: int; model: str; model_version: str; event_ids: list[str]; ingest_ts_ms: list[int]; event_ts: list[float]
    scores: list[float]; columns: dict[str, list[float | str | None]]
def fb_pd():
    return FBPD(partition=0, model="fraud", model_version="1", event_ids=ids, ingest_ts_ms=ingest.tolist(),
                event_ts=event_ts.tolist(), scores=scores.tolist(),
                columns={k: [None if (isinstance(x, float) and x != x) else x for x in (v.tolist() if isinstance(v, np.ndarray) else v)]
                         for k, v in cols.items()}).model_dump_json().encode()

a, b, c = fb_orjson(), fb_dc(), fb_ms_tolist()
assert orjson.loads(a) == orjson.loads(b) == orjson.loads(c), "feature batch wire formats differ"
print(f"feature batch encode (2,000 rows, 9 columns, {len(a)} bytes), us per batch")
for name, f in [("orjson dict+numpy (today)", fb_orjson), ("dataclass+orjson numpy", fb_dc),
                ("msgspec Struct (tolist)", fb_ms_tolist), ("pydantic v2", fb_pd)]:
    print(f"  {name:28s} {best(f, 50) * 1e6:8.0f}")

dec_fb = msgspec.json.Decoder(FBMS)
def dec_today():
    m = orjson.loads(a)
    return {k: np.array(v, dtype=np.float64) if k.startswith("n") else list(v) for k, v in m["columns"].items()}
def dec_dc():
    m = FBDC(**orjson.loads(a))
    return {k: np.array(v, dtype=np.float64) if k.startswith("n") else list(v) for k, v in m.columns.items()}
def dec_ms():
    m = dec_fb.decode(a)
    return {k: np.array(v, dtype=np.float64) if k.startswith("n") else list(v) for k, v in m.columns.items()}
def dec_chosen():
    m = decode(a, FeatureBatch)
    return {k: np.array(v, dtype=np.float64) if k.startswith("n") else list(v) for k, v in m.columns.items()}
def dec_pd():
    m = FBPD.model_validate_json(a)
    return {k: np.array(v, dtype=np.float64) if k.startswith("n") else list(v) for k, v in m.columns.items()}
print("feature batch decode (to monitor columns), us per batch")
for name, f in [("orjson.loads (today)", dec_today), ("orjson.loads -> dataclass", dec_dc),
                ("msgspec typed decode", dec_ms), ("stream.messages.FeatureBatch", dec_chosen),
                ("pydantic model_validate_json", dec_pd)]:
    print(f"  {name:28s} {best(f, 50) * 1e6:8.0f}")
print(sys.version.split()[0], "orjson", orjson.__version__, "msgspec", msgspec.__version__, "pydantic", pydantic.__version__)
