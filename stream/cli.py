"""The ``mlstream`` command line. Errors print one line, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from stream.errors import StreamError
from stream.logs import configure_logging

if TYPE_CHECKING:
    from stream.config import Settings


def _settings(args: argparse.Namespace) -> Settings:
    from stream.config_load import load_settings

    return load_settings(getattr(args, "config", None))


def cmd_worker(args: argparse.Namespace) -> int:
    from stream.app import ROLES, run, run_worker, tune_gc

    settings = _settings(args)
    configure_logging(settings.log_level, settings.log_format, settings.errors.log_repeat_interval_s)
    roles = ROLES if args.role == "all" else (args.role,)
    if roles == ("monitor",):  # with the scorer, the monitor runs in a child process tuned there
        tune_gc(settings.gc_young_threshold)
    run(run_worker(settings, roles, freeze=True))
    return 0


def cmd_trainer(args: argparse.Namespace) -> int:
    import signal

    from stream.training.trainer_app import run_trainer

    settings = _settings(args)
    configure_logging(settings.log_level, settings.log_format, settings.errors.log_repeat_interval_s)

    from stream.app import stop_within

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # stop, with a watchdog after the grace period
            loop.add_signal_handler(sig, stop_within, stop, settings.shutdown_grace_s)
        await run_trainer(settings, stop)

    asyncio.run(main())
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from stream.examples import traffic

    if args.scenario in traffic.SCENARIOS:  # monitored columns of realistic traffic, as JSON lines
        return traffic.write_jsonl(args.scenario, args.events or 200_000, args.output, seed=args.seed,
                                   iid=args.iid, drift=args.drift, drift_at=args.drift_at)
    from stream.examples.simulate import PaymentSimulator
    from stream.tools.traffic import produce

    settings = _settings(args)
    sim = PaymentSimulator(seed=args.seed, n_users=args.users, scenario=args.scenario,
                           drift_at=args.drift_at, invalid_rate=args.invalid_rate)
    sent = asyncio.run(produce(settings, sim, args.events, rate=args.rate,
                               label_delay=args.label_delay))
    print(f"produced {sent} events to {settings.topics.events!r}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from stream.domain import load_domain
    from stream.examples.simulate import WARMUP_EVENTS, simulated
    from stream.registry import ModelStore
    from stream.training.train import read_jsonl, train

    settings = _settings(args)
    domain = load_domain(settings.domain)
    if args.data:
        data, warmup = read_jsonl(args.data, domain), args.warmup or 0
    else:
        data, warmup = simulated(args.events, args.seed), WARMUP_EVENTS if args.warmup is None else args.warmup
    store = ModelStore(args.store or settings.model_store)
    from stream.scoring.feed import sync_store

    # numbered (and promoted) on the newest published registry; without Kafka, on this store alone
    asyncio.run(sync_store(settings, store, "train", required=False))
    card = train(domain, data, store, name=args.name or settings.model_name, version=args.version,
                 seed=args.seed, warmup=warmup, promote=not args.no_promote)
    print(f"trained {card['name']} version {card['version']}: {json.dumps(card['training']['metrics'])}")
    if not args.no_promote:  # scorers on other machines hear of it through the model feed
        from stream.feed_publish import publish_change

        line = publish_change(settings, store, card["name"], f"trained and promoted version {card['version']}")
        if line:
            print(line)
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    import signal
    import threading

    from stream.tools.broker import EmbeddedBroker

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with EmbeddedBroker(host=args.host, port=args.port) as broker:
        print(f"embedded Kafka broker listening on {broker.bootstrap} (in memory: its topics go when it stops); "
              f"point MLSTREAM_KAFKA__BOOTSTRAP_SERVERS={broker.bootstrap} at it; Ctrl-C stops it", flush=True)
        while not stop.wait(0.5):
            if broker.process is None or broker.process.poll() is not None:
                print("mlstream: error: the embedded broker exited", file=sys.stderr)
                return 2
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from stream.tools.demo import DemoOptions, print_summary, run_demo

    opts = DemoOptions(events=args.events, rate=args.rate, scenario=args.scenario,
                       drift_at=args.drift_at, seed=args.seed, workers=args.workers,
                       invalid_rate=args.invalid_rate, json_output=args.json, trainer=not args.no_trainer,
                       broker=args.broker, shadow_labels=args.shadow_labels,
                       model_store=Path(args.store))
    try:
        result = asyncio.run(run_demo(opts, Path(args.workdir)))
    except KeyboardInterrupt:
        print("\nstopped")
        return 0
    if result is not None:
        print_summary(result, args.json)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from stream.tools.bench import main as bench_main

    return bench_main(args)


def cmd_replay(argv: list[str]) -> int:
    from stream.monitoring.replay import main as replay_main

    return replay_main(argv)


def cmd_report(argv: list[str]) -> int:
    from stream.reporting.report import main as report_main

    return report_main(argv)


def cmd_bench_drift(argv: list[str]) -> int:
    from stream.tools.bench_drift import main as bench_drift_main

    return bench_drift_main(argv)


def cmd_bench_sustained(argv: list[str]) -> int:
    from stream.tools.bench_sustained import main as bench_sustained_main

    return bench_sustained_main(argv)


def build_parser() -> argparse.ArgumentParser:
    from stream.examples.simulate import SCENARIOS
    from stream.examples.traffic import DRIFTS
    from stream.examples.traffic import SCENARIOS as TRAFFIC

    parser = argparse.ArgumentParser(prog="mlstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="TOML settings file (else MLSTREAM_CONFIG); env vars override it")
        return p

    p = with_config(sub.add_parser("worker", help="run the pipeline against a Kafka cluster"))
    p.add_argument("--role", choices=["all", "scorer", "monitor"], default="all")
    p.set_defaults(func=cmd_worker)

    p = with_config(sub.add_parser("trainer", help="answer retraining requests: train, check, promote"))
    p.set_defaults(func=cmd_trainer)

    p = with_config(sub.add_parser(
        "simulate", help="produce simulated payments (and labels) to Kafka, or write realistic traffic "
                         f"({'|'.join(TRAFFIC)}) as JSON lines"))
    p.add_argument("--events", type=int, default=None, help="how many (default: until Ctrl-C; 200,000 for traffic)")
    p.add_argument("--rate", type=float, default=1_000.0, help="events per second (0 = as fast as possible)")
    p.add_argument("--scenario", choices=sorted(SCENARIOS) + [t for t in TRAFFIC if t not in SCENARIOS],
                   default="none", help="payment scenario (to Kafka) or realistic traffic (JSON lines)")
    p.add_argument("--output", default=None, help="traffic: write here instead of stdout")
    p.add_argument("--iid", action="store_true", help="traffic: i.i.d. rows of the process (a training set)")
    p.add_argument("--drift", choices=DRIFTS, default=None, help="traffic: inject this drift at --drift-at")
    p.add_argument("--drift-at", type=int, default=None, help="event index where the scenario starts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--users", type=int, default=250)
    p.add_argument("--invalid-rate", type=float, default=0.0)
    p.add_argument("--label-delay", type=int, default=1_000, help="labels trail events by this many")
    p.set_defaults(func=cmd_simulate)

    p = with_config(sub.add_parser("train", help="train a model and write it to the model store"))
    p.add_argument("--data", help="labelled events (JSONL); default: simulated")
    p.add_argument("--events", type=int, default=60_000, help="simulated events when --data is not given")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=None, help="leading events that only build state")
    p.add_argument("--name", default=None)
    p.add_argument("--version", default=None)
    p.add_argument("--store", default=None, help="model store folder (default: settings)")
    p.add_argument("--no-promote", action="store_true", help="store without making it current")
    p.set_defaults(func=cmd_train)

    # the `models` group: its verbs live with their logic (`add` in stream/training/register.py)
    from stream.training.register import add_verb as add_models_add

    models = with_config(sub.add_parser(
        "models", help="the model store: list, show, diff, promote, roll back, register outside models"))
    models.add_argument("--store", default=None, help="model store folder (default: settings)")
    models.add_argument("--name", default=None, help="model name (default: settings)")
    verbs = models.add_subparsers(dest="verb", required=True)
    add_models_add(verbs)
    from stream.training.models_cli import add_verbs as add_registry_verbs

    add_registry_verbs(verbs)  # list, show, diff, promote, rollback

    p = sub.add_parser("demo", help="the whole pipeline on a local broker (Apache Kafka or embedded) with simulated traffic")
    p.add_argument("--events", type=int, default=None, help="run N events, print a summary and exit")
    p.add_argument("--rate", type=float, default=None, help="events per second")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="mean_shift")
    p.add_argument("--drift-at", type=int, default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--invalid-rate", type=float, default=0.01)
    p.add_argument("--store", default="models")
    p.add_argument("--workdir", default=".mlstream/demo", help="worker logs and the demo's model store")
    p.add_argument("--no-trainer", action="store_true", help="do not answer retraining requests")
    p.add_argument("--shadow-labels", type=int, default=1_000,
                   help="live labelled events a passing challenger shadows the champion on (0: promote at once)")
    p.add_argument("--broker", choices=("auto", "kafka", "embedded"), default="auto",
                   help="Apache Kafka (needs Java and `make kafka`), the embedded broker, or auto: Kafka if present")
    p.add_argument("--json", action="store_true", help="machine-readable summary (with --events)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("broker", help="run the embedded Kafka broker alone (development, tutorials)")
    p.add_argument("--host", default="127.0.0.1", help="loopback by default")
    p.add_argument("--port", type=int, default=9092, help="default: the settings' default broker port")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("bench", help="throughput/latency benchmark (Apache Kafka or the embedded broker)")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--broker", choices=("auto", "kafka", "embedded"), default="auto",
                   help="Apache Kafka (needs Java and `make kafka`), the embedded broker, or auto: Kafka if present")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--json", action="store_true")
    p.add_argument("--profile", metavar="FILE", default=None,
                   help="cProfile the one-event batches into FILE and print where their CPU goes")
    p.set_defaults(func=cmd_bench)

    sub.add_parser("replay", help="backtest the drift monitor on recorded JSONL (see replay --help)",
                   add_help=False)
    sub.add_parser("report", help="self-contained HTML drift report from a file or a live deployment "
                   "(see report --help)", add_help=False)
    sub.add_parser("bench-drift", help="drift detection benchmark (see bench-drift --help)", add_help=False)
    sub.add_parser("bench-sustained", help="a long run at a fixed rate on Apache Kafka: throughput, lag and "
                   "RSS over time (see bench-sustained --help)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # replay, report, bench-drift and bench-sustained own their argument parsing
        if argv and argv[0] == "replay":
            return cmd_replay(argv[1:])
        if argv and argv[0] == "report":
            return cmd_report(argv[1:])
        if argv and argv[0] == "bench-drift":
            return cmd_bench_drift(argv[1:])
        if argv and argv[0] == "bench-sustained":
            return cmd_bench_sustained(argv[1:])
        args = build_parser().parse_args(argv)
        if getattr(args, "command", None) == "demo" and args.rate is None:
            args.rate = 5_000.0 if args.events else 2_000.0
        return int(args.func(args))
    except StreamError as exc:
        print(f"mlstream: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"mlstream: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
