#!/usr/bin/env python3
"""Set up and run everything on a machine that has nothing but Python 3.

    python3 scripts/dev.py run [--seconds N] [--fresh]   build, start the cloud side and a local core, deploy, show it working
    python3 scripts/dev.py run --scenario outage|flap|kill|slow-link|chaos|soak [...]   the same, with faults, then a report and a PNG
    python3 scripts/dev.py test [PYTEST ARGS]  the test suite (what CI runs)
    python3 scripts/dev.py bench [ARGS]        the benchmarks
    python3 scripts/dev.py device-check --arch arm64 [--seconds N]   the bundle on a Pi's CPU
                                               architecture (a Debian arm64 userland under qemu-user, as root)

Each command first makes `.venv/` (a virtual environment with this project and its
dependencies) if it is missing or pyproject.toml changed since. Standard library only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".backfill-installed"
RUN_ROOT = ROOT / ".localgg"
DEPLOYMENT = ROOT / "scripts" / "deployment" / "local.json"


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def ensure_venv() -> None:
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not PYTHON.exists():
        say(f"creating {VENV}")
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    say("installing the project and its dependencies into .venv (pip)")
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(wanted)


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def ensure_package(package: str, find, why: str) -> str | None:
    """A Debian package's program, installed if missing (as root, or with passwordless sudo)."""
    found = find()
    if found or not shutil.which("apt-get"):
        return found
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None:
        return None
    say(f"installing {package} (Debian package) {why}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = prefix + ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    for command in (install, prefix + ["apt-get", "update", "-q"], install):
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if find():
            break
    return find()


def ensure_mosquitto() -> str | None:
    return ensure_package("mosquitto", find_mosquitto, "for the IoT Core stand-in")


def venv_env() -> dict[str, str]:
    """The environment for the core: its components find this venv's python3 first."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV)
    return env


def localgg(*args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([str(PYTHON), "-m", "localgg", *args], env=venv_env(), check=check,
                          capture_output=capture, text=True)


def cmd_test(args: list[str]) -> int:
    ensure_venv()
    if ensure_mosquitto() is None:
        print("The tests need mosquitto (Debian package mosquitto) and it could not be installed here: "
              "install it, then run this again.", file=sys.stderr)
        return 1
    if ensure_package("tmux", lambda: shutil.which("tmux"), "to look at the live view as a terminal shows it") is None:
        print("The tests need tmux (Debian package tmux) and it could not be installed here: "
              "install it, then run this again.", file=sys.stderr)
        return 1
    if ensure_package("fuse3", lambda: shutil.which("fusermount3"), "for the power-cut filesystem (scripts/cutfs)") is None:
        print("The tests need fuse3 (Debian package fuse3) and it could not be installed here: "
              "install it, then run this again.", file=sys.stderr)
        return 1
    say("running the tests")
    return subprocess.run([str(PYTHON), "-m", "pytest", *test_workers(args), *args], cwd=ROOT,
                          env=venv_env()).returncode


def test_workers(args: list[str]) -> list[str]:
    """Two pytest-xdist workers, a test module to one worker (its module fixtures stay whole):
    most end-to-end time is waiting (on a link, a commit, a backoff), so two halves share two
    cores well. Any -n given by the user wins; -s and --pdb (a person watching) run in one process."""
    if any(a == "-n" or a.startswith(("-n", "--numprocesses", "--dist")) for a in args) or "no:xdist" in args:
        return []
    if any(a in ("-s", "--capture=no", "--pdb") for a in args):
        return []
    return ["-n", "2", "--dist", "loadfile"]


def cmd_bench(args: list[str]) -> int:
    ensure_venv()
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "bench"), *args], cwd=ROOT).returncode


RUN_HELP = """build the components, start the cloud side (an IoT Core stand-in with mutual TLS
and a shadow service) and a local Greengrass core, deploy io.backfill.SensorPipeline (the
sensor on a simulated BME680) and show the corrected readings until Ctrl-C.

State is kept across runs (the store's backlog, the cloud's record) unless --fresh. Faults
to try from another terminal while it runs (the run follows them):
  localgg fault link down|up|flap --root .localgg/root
  localgg fault core restart [--kill] --root .localgg/root
  localgg fault component kill -n io.backfill.StoreAndForward --root .localgg/root
  localgg fault broker restart --cloud .localgg/cloud
The device's shadow as the cloud sees it, and a setting changed from there:
  localgg cloud shadow status --cloud .localgg/cloud --thing-name backfill-dev --shadow-name backfill
  localgg cloud shadow get --cloud .localgg/cloud --thing-name backfill-dev --shadow-name backfill
  localgg cloud shadow update --cloud .localgg/cloud --thing-name backfill-dev --shadow-name backfill \\
      --payload '{"state": {"desired": {"sampling": {"interval_s": 2}}}}'

--scenario runs faults by itself after a warm-up, waits until IoT Core has every reading,
then prints a report read from the cloud recorder (produced, delivered, lost, duplicates,
evicted, time to drain, latency p50/p99) and writes a PNG of sample time against arrival
time into the state folder:
  outage [--offline S] [--restart-core]   the link down S seconds (a core restart halfway)
  flap [--cycles N]                       the link down 8 s / up 12 s, N times
  kill [--kills N] [--seed N]             SIGKILL a random component N times (seeded)
  slow-link [--limited S]                 400 B/s and 300 ms each way for S seconds
  chaos [--minutes N] [--seed N]          a random fault every 3-10 s for N minutes (default 30):
                                          SIGKILLs, core restarts (graceful and --kill), broker
                                          restarts, the link down or limited for 2-20 s
  soak [--minutes N] [--seed N]           chaos with the sensor at 10 Hz, its clock stepped back
                                          and the store's disk (a tmpfs: root) nearly full too;
                                          always --fresh; the report adds lost of acknowledged
                                          readings, each component's peak RSS, the store's counters
                                          (what `scripts/bench soak` runs)"""


def run_arguments(args: list[str]):
    import argparse
    parser = argparse.ArgumentParser(prog="python3 scripts/dev.py run", description=RUN_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, help="stop by itself after this many seconds")
    parser.add_argument("--fresh", action="store_true", help="start over: remove what an earlier run left")
    parser.add_argument("--state", type=Path, default=RUN_ROOT, help="where the run keeps its state (default .localgg)")
    parser.add_argument("--plain", action="store_true",
                        help="a line per reading even in a terminal (the live view is for terminals only)")
    import devscenario
    parser.add_argument("--scenario", choices=devscenario.SCENARIOS, help="run these faults, then report (see below)")
    parser.add_argument("--offline", type=float, default=60.0, help="outage: seconds offline (default 60)")
    parser.add_argument("--restart-core", action="store_true", help="outage: restart the core halfway")
    parser.add_argument("--cycles", type=int, default=4, help="flap: how many times (default 4)")
    parser.add_argument("--kills", type=int, default=3, help="kill: how many SIGKILLs (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="kill, chaos, soak: the seed of the faults (default 1)")
    parser.add_argument("--limited", type=float, default=120.0, help="slow-link: seconds limited (default 120)")
    parser.add_argument("--minutes", type=float, default=30.0, help="chaos, soak: minutes of faults (default 30)")
    parser.add_argument("--warmup", type=float, default=15.0, help="scenario: seconds before the first fault (default 15)")
    parser.add_argument("--drain-timeout", type=float, default=300.0,
                        help="scenario: the longest wait for IoT Core to have every reading (default 300)")
    parsed = parser.parse_args(args)
    if parsed.scenario == "soak":
        parsed.fresh = True              # its report counts every reading in the state as the soak's
    if parsed.seconds is not None and parsed.seconds <= 0:
        parser.error("--seconds must be more than 0")
    if parsed.scenario and parsed.seconds is not None:
        parser.error("--seconds and --scenario: a scenario ends by itself once IoT Core has every reading")
    for key, low in (("offline", 1), ("cycles", 1), ("kills", 1), ("limited", 1), ("warmup", 0), ("drain_timeout", 10),
                     ("minutes", 0.1)):
        if getattr(parsed, key) < low:
            parser.error(f"--{key.replace('_', '-')} must be at least {low}")
    return parsed


def cmd_run(args: list[str]) -> int:
    import devrun
    options = run_arguments(args)            # --help ends here, before anything starts
    state = options.state.resolve()
    ensure_venv()
    if Path(sys.prefix).resolve() != VENV.resolve():
        # the live view (rich), the report's picture (matplotlib) and the cloud's shadow
        # (paho-mqtt) are the venv's: go on there, the same process (Ctrl-C, pid) as before
        os.execv(str(PYTHON), [str(PYTHON), str(Path(__file__).resolve()), "run", *args])
    if ensure_mosquitto() is None:
        say("mosquitto could not be installed here: falling back to the embedded broker amqtt (pip)")
        subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "amqtt>=0.11"], check=True)
    # greengrass-build/ is shared: another run builds and deploys from it only after this one has deployed
    build_lock = open(ROOT / ".greengrass-build.lock", "w")
    fcntl.flock(build_lock, fcntl.LOCK_EX)
    say("building the components (scripts/build.py, GDK's zip rules)")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build.py")], check=True)
    cloud, root, received_db = state / "cloud", state / "root", state / "iot-core-received.db"
    left = devrun.stop_core(root) if root.exists() else None
    if left is not None:
        say(f"stopped a core an earlier run left running (pid {left})")
    if options.scenario == "soak":                 # an earlier soak's tmpfs, left by a crash
        import devsoak
        devsoak.SmallDisk(root / "work" / devsoak.STORE).unmount()
    if options.fresh and state.exists():
        say(f"--fresh: removing {state}")
        shutil.rmtree(state)
    elif (root / "work").exists():
        say(f"keeping what an earlier run left in {state} (the store forwards its backlog first; --fresh starts over)")
    state.mkdir(parents=True, exist_ok=True)
    before, _ = devrun.cloud_readings(received_db)
    processes: list[subprocess.Popen] = []

    def spawn(log_name: str, *localgg_args: str) -> subprocess.Popen:
        proc = subprocess.Popen([str(PYTHON), "-m", "localgg", *localgg_args], env=venv_env(),
                                stdout=open(state / log_name, "a"), stderr=subprocess.STDOUT)
        processes.append(proc)
        return proc

    def wait_for_file(path: Path, proc: subprocess.Popen, log_name: str, what: str) -> None:
        deadline = time.monotonic() + 60
        while not path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                print((state / log_name).read_text(), file=sys.stderr)
                raise SystemExit(f"{what} did not start")
            time.sleep(0.1)

    follower = None
    soak_disk = None
    if options.scenario == "soak":
        import devsoak
        soak_disk = devsoak.SmallDisk(root / "work" / devsoak.STORE)
    try:
        say(f"starting the cloud side (IoT Core stand-in with mutual TLS, shadow service) in {cloud}")
        (cloud / "control.sock").unlink(missing_ok=True)
        proc = spawn("cloud.out", "cloud", "start", "--dir", str(cloud), "--broker", "auto")
        wait_for_file(cloud / "control.sock", proc, "cloud.out", "the cloud")
        spawn("recorder.out", "cloud", "record", "--cloud", str(cloud), "--topic", "dt/#", "--db", str(received_db))
        say(f"starting a local Greengrass core under {root}, connected to it")
        proc = spawn("core.out", "start", "--root", str(root), "--thing", "backfill-dev", "--cloud", str(cloud))
        wait_for_file(root / "localgg.pid", proc, "core.out", "the core")
        say("deploying io.backfill.SensorPipeline (sensor on a simulated BME680, correction, store-and-forward) "
            "with the CLI; io.backfill.Runtime's Install makes the components' one venv from its wheels")
        config = json.loads(DEPLOYMENT.read_text())
        if soak_disk is not None:
            say(f"the soak: the sensor at 10 Hz (interval_s {SOAK_INTERVAL_S:g}); the store's work folder on a "
                f"{soak_disk.size_mb} MiB tmpfs")
            soak_disk.mount()
            config[SENSOR]["MERGE"]["interval_s"] = SOAK_INTERVAL_S
        deploy(root, config)
        build_lock.close()                    # deployed: the core has its own copy of the artifacts
        if soak_disk is not None:
            in_effect(root, SENSOR, {"interval_s": SOAK_INTERVAL_S})
        show_components(root)
        seconds = options.seconds
        say(f"corrected readings on local pub/sub, raw beside corrected, for {seconds:g} s" if seconds
            else f"corrected readings on local pub/sub, raw beside corrected; the scenario {options.scenario} "
                 "ends by itself (Ctrl-C to stop)" if options.scenario
            else "corrected readings on local pub/sub, raw beside corrected (Ctrl-C to stop)")
        view = None
        if sys.stdout.isatty() and not options.plain:
            import devview
            view = devview.View()
        follower = devrun.Follower(str(PYTHON), venv_env(), root,
                                   None if seconds is None else time.monotonic() + seconds,
                                   **({"out": view.event, "on_reading": view.reading} if view else {}))
        scenario = (start_scenario(options, follower, root, received_db,
                                   say=view.event if view else lambda text: print(text, flush=True))
                    if options.scenario else None)
        poller = None
        try:
            if view is None:
                follower.run()
            else:
                from rich.live import Live
                poller = devview.Poller(view, root, cloud, received_db, str(PYTHON), venv_env(), since=time.time())
                poller.start()
                with Live(view, refresh_per_second=2):
                    follower.run()
        except KeyboardInterrupt:
            pass
        finally:
            if scenario is not None:
                scenario.stop()
            if poller is not None:
                poller.stop()
        if scenario is not None:
            devrun.stop_core(root)           # the store's counters are final once it has stopped
            return report_scenario(options, scenario, follower, state, cloud, received_db)
        keys, batches = devrun.cloud_readings(received_db)
        new = keys - before
        restarts = f"; the core went away {follower.restarts} time(s) and was followed" if follower.restarts else ""
        arrived = {(str(run), int(seq)) for run, seq in new}
        shown = {(str(run), int(seq)) for run, seq in follower.keys}
        waiting = len(shown - arrived)
        earlier = len(arrived - shown)
        if waiting:
            restarts += (f"; the other {waiting} are in the store's backlog (it batches for up to max_latency_ms, "
                         "10 s by default; the next run forwards them first)")
        also = (f", and {earlier} more sampled before this view followed the topic (an earlier run's backlog, "
                "or the first seconds)") if earlier else ""
        say(f"{follower.distinct} distinct corrected readings went over local pub/sub ({follower.copies} "
            f"copies: a resend is a copy); IoT Core has received {len(shown & arrived)} of them{restarts}{also} "
            f"(recorded in {received_db}: {len(keys)} since it was made); logs are in {root / 'logs'}")
        return 0 if follower.distinct and new else 1
    except KeyboardInterrupt:
        return 130
    finally:
        say("stopping the core and the cloud")
        devrun.stop_all(root, processes)
        if soak_disk is not None:
            soak_disk.unmount()


SENSOR = "io.backfill.Bme680Sensor"
SOAK_INTERVAL_S = 0.1                      # 10 Hz: the schema's least interval_s


def deploy(root: Path, config: dict, quiet: bool = False) -> None:
    """The bundle from greengrass-build/ with `config` (--update-config) through the CLI,
    waiting until it SUCCEEDED. --update-config reaches root components only (as on the
    nucleus): the sensor's simulated bus, the Nucleus's interpolation and ShadowManager's sync
    are roots too."""
    import bundleinfo
    build, version = ROOT / "greengrass-build", bundleinfo.version()
    localgg("deployment", "create", "--root", str(root), "--recipeDir", str(build / "recipes"),
            "--artifactDir", str(build / "artifacts"), "--merge", f"io.backfill.SensorPipeline={version}",
            "--merge", f"{SENSOR}={version}", "--merge", "aws.greengrass.Nucleus=2.18.2",
            "--merge", "aws.greengrass.ShadowManager=2.3.12", "--update-config", json.dumps(config), "--wait", "600", capture=quiet)


def in_effect(root: Path, component: str, wanted: dict, timeout: float = 60) -> None:
    """Until the component's last good settings (settings.json in its work folder) hold every
    value of `wanted`; a value it refused ends the run loudly, with what it said."""
    path = root / "work" / component / "settings.json"
    deadline = time.monotonic() + timeout
    differing = dict(wanted)
    while time.monotonic() < deadline:
        try:
            effective = json.loads(path.read_text())
            differing = {key: effective.get(key) for key, value in wanted.items() if effective.get(key) != value}
        except (OSError, ValueError):    # not written yet, or being replaced
            pass
        if not differing:
            return
        time.sleep(0.1)
    log = root / "logs" / f"{component}.log"
    said = [line for line in (log.read_text(errors="replace").splitlines() if log.exists() else []) if "refused" in line]
    raise SystemExit(f"{component} did not put {wanted} in effect within {timeout:g} s (in effect: {differing}); "
                     f"it said: {said[-3:] or 'nothing about it'}")


def show_components(root: Path) -> None:
    """`localgg component list`, each component on one line (its configuration is in the log)."""
    listing = localgg("component", "list", "--root", str(root), check=False, capture=True).stdout
    name = version = None
    for line in listing.splitlines():
        key, _, value = line.strip().partition(": ")
        if key == "Component Name":
            name = value
        elif key == "Version":
            version = value
        elif key == "State" and name:
            print(f"    {name:<36} {version or '':<8} {value}", flush=True)
            name = None


def start_scenario(options, follower, root: Path, received_db: Path, say=print):
    """The scenario's thread: its faults through `localgg fault`, then the wait for the drain."""
    import devreport
    import devrun
    import devscenario
    steps = devscenario.plan(options.scenario, offline=options.offline, restart_core=options.restart_core,
                             cycles=options.cycles, kills=options.kills, seed=options.seed,
                             limited=options.limited, warmup=options.warmup, minutes=options.minutes)
    started = time.time()
    soak = options.scenario == "soak"
    since = 0.0 if soak else started    # the soak starts fresh: every reading in its state is its own,
    failed: list[str] = []              # even those sampled while the sensor's clock was stepped back
    extras = start_soak_watch(root, follower) if soak else None

    def fault(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(PYTHON), "-m", "localgg", "fault", *args], env=venv_env(),
                              capture_output=True, text=True, timeout=180)

    def do(step) -> None:
        verb, _, rest = step.action.partition(" ")
        if verb in ("clock", "disk"):
            try:
                soak_fault(step.action, root, extras["disk"])
            except (SystemExit, OSError, subprocess.SubprocessError) as error:
                failed.append(f"{step.label}: {error}")
                say(f"    -- scenario: FAILED: {step.label}: {error}")
            return
        if verb == "kill":
            command = ["component", "kill", "-n", rest, "--root", str(root)]
        elif verb == "core":
            command = ["core", *rest.split(), "--root", str(root)]
        elif verb == "broker":
            command = ["broker", "restart", "--cloud", str(root.parent / "cloud")]
        elif rest == "limit":
            command = ["link", "limit", "--bandwidth", str(devscenario.SLOW_BANDWIDTH),
                       "--latency", str(devscenario.SLOW_LATENCY_MS), "--root", str(root)]
        else:
            command = ["link", rest, "--root", str(root)]
        deadline = time.monotonic() + 120
        while True:                       # a core that is restarting answers once it is back
            result = fault(*command)
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        if result.returncode != 0:
            say(f"    -- scenario: `localgg fault {' '.join(command)}` failed: {result.stderr.strip()}")
        if verb == "core":
            give_up_at = time.monotonic() + 120
            devrun.wait_for_core(str(PYTHON), venv_env(), root, given_up=lambda: time.monotonic() >= give_up_at)

    def drained() -> bool:
        window_end = scenario.fault_end_wall + devreport.TAIL_S
        seen = {key: t for key, t in dict(follower.sampled).items() if t >= since}   # as the report counts
        return time.time() >= window_end and devreport.drained(
            devreport.read_arrivals(received_db, since=since), seen, window_end)

    scenario = devscenario.Scenario(steps, do=do, drained=drained,
                                    finish=lambda: follower.finish_at(time.monotonic() + 2),
                                    drain_timeout=options.drain_timeout, say=say)
    scenario.started_wall, scenario.since, scenario.failed, scenario.soak = started, since, failed, extras
    scenario.start()
    return scenario


def start_soak_watch(root: Path, follower) -> dict:
    """The soak's watchers beside the scenario: each component's peak RSS, and the store's
    acknowledgements on backfill/acks as the sensor gets them (a follower of its own)."""
    import threading

    import devrun
    import devscenario
    import devsoak
    rss = devsoak.PeakRss(root, devscenario.COMPONENTS)
    rss.start()
    acks = devsoak.AckLedger()
    ack_follower = devrun.Follower(str(PYTHON), venv_env(), root, None, out=lambda text: None,
                                   on_reading=acks.add, topic=devrun.ACKS)
    threading.Thread(target=ack_follower.run, daemon=True, name="acks").start()
    return {"rss": rss, "acks": acks, "ack_follower": ack_follower,
            "disk": devsoak.SmallDisk(root / "work" / devsoak.STORE)}


def soak_fault(action: str, root: Path, disk) -> None:
    """The soak's own faults: the sensor's clock stepped (a deployment of sim_clock_offset_s,
    applied live; a refusal fails loudly), the store's disk filled or given room again."""
    if action == "disk fill":
        disk.fill()
        return
    if action == "disk free":
        disk.free()
        return
    offset = float(action.rsplit(" ", 1)[1])
    deadline = time.monotonic() + 180
    while True:                           # a core that is restarting takes it once it is back
        try:
            with open(ROOT / ".greengrass-build.lock", "w") as build_lock:     # no other run rebuilding it
                fcntl.flock(build_lock, fcntl.LOCK_EX)
                deploy(root, {SENSOR: {"MERGE": {"sim_clock_offset_s": offset}}}, quiet=True)
            break
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    in_effect(root, SENSOR, {"sim_clock_offset_s": offset})


def store_evicted(cloud: Path) -> int | None:
    """The store's eviction counter as the cloud shadow has it (None: no report there yet).
    Through `localgg cloud shadow get` in the venv: dev.py itself runs on a Python that has
    none of the project's dependencies (paho-mqtt, rich) installed."""
    result = localgg("cloud", "shadow", "get", "--cloud", str(cloud), "--thing-name", "backfill-dev",
                     "--shadow-name", "backfill", check=False, capture=True)
    try:
        value = json.loads(result.stdout)["state"]["reported"]["store"]["counters"]["evicted"]
        return int(value) if value is not None else None
    except (KeyError, TypeError, ValueError):
        return None


def report_scenario(options, scenario, follower, state: Path, cloud: Path, received_db: Path) -> int:
    import devreport
    arrivals = devreport.read_arrivals(received_db, since=scenario.since)
    seen = {key: t for key, t in follower.sampled.items() if t >= scenario.since}
    window_end = None if scenario.fault_end_wall is None else scenario.fault_end_wall + devreport.TAIL_S
    soak = scenario.soak
    report = devreport.summarize(arrivals, seen, scenario.fault_end_wall, store_evicted(cloud), window_end,
                                 latency_from=dict(follower.observed) if soak else None)
    name = options.scenario + ("-restart-core" if options.restart_core else "")
    lines = devreport.render(report, name)
    lines.insert(1, f"  (the readings sampled from the scenario's start until {devreport.TAIL_S:g} s after its last fault)"
                 if not soak else f"  (every reading of the soak, warm-up included, until {devreport.TAIL_S:g} s "
                                  "after its last fault; latency from local pub/sub to IoT Core)")
    if scenario.drained_in_time is False:
        lines.append(f"  (IoT Core did not have every reading within --drain-timeout {options.drain_timeout:g} s)")
    failed = list(scenario.failed)
    if soak:
        failed += report_soak(lines, report, soak, scenario, state, root_of=state / "root")
    text_path, png_path = state / f"report-{name}.txt", state / f"report-{name}.png"
    text_path.write_text("\n".join(lines) + "\n")
    if soak:       # the sensor's clock was stepped back: each reading where the follower saw it
        observed = follower.observed
        arrivals = [devreport.Arrival(a.key, observed.get(a.key, a.sampled), a.arrived) for a in arrivals]
    devreport.plot(arrivals, scenario.events, png_path,
                   f"python3 scripts/dev.py run --scenario {options.scenario}"
                   + (f" --offline {options.offline:g}" if options.scenario == "outage" else "")
                   + (" --restart-core" if options.restart_core else "")
                   + f": {report.delivered} of {report.produced} delivered, {report.lost} lost, "
                     f"{report.duplicates} duplicates")
    for line in lines:
        print(line, flush=True)
    say(f"the report is in {text_path}, the picture in {png_path}")
    if soak:
        return 0 if report.produced and not failed else 1
    return 0 if report.lost == 0 and report.produced else 1


def report_soak(lines: list[str], report, soak: dict, scenario, state: Path, root_of: Path) -> list[str]:
    """The soak's lines under the report (and report-soak.json beside it); what failed."""
    import devsoak
    soak["rss"].stop()
    soak["ack_follower"].finish_at(time.monotonic())
    acknowledged, before = devsoak.split_lost(report.lost_keys, soak["acks"])
    counters = devsoak.store_counters(root_of / "work" / devsoak.STORE / "store.db")
    done = len(scenario.events) - (1 if scenario.drained_in_time else 0)     # the last event: "drained"
    faults = devsoak.fault_tally(s.action for s in scenario.steps[:done])
    log = root_of / "logs" / f"{devsoak.STORE}.log"
    full_seen = devsoak.disk_full_seen(log.read_text(errors="replace") if log.exists() else "")
    lines += devsoak.render(acknowledged, before, soak["acks"], soak["rss"].peak_kib, soak["rss"].processes,
                            counters, faults, full_seen)
    (state / "report-soak.json").write_text(json.dumps({
        "produced": report.produced, "delivered": report.delivered, "lost": report.lost,
        "lost_acknowledged": [list(k) for k in acknowledged], "lost_before_ack": [list(k) for k in before],
        "duplicates": report.duplicates, "acks_seen": soak["acks"].count, "drained": scenario.drained_in_time,
        "peak_rss_kib": soak["rss"].peak_kib, "processes": soak["rss"].processes, "store_counters": counters,
        "faults": dict(faults), "disk_full_seen": full_seen, "steps": done, "planned": len(scenario.steps),
        "drain_s": report.drain_s, "latency_p50_s": report.latency_p50_s, "latency_p99_s": report.latency_p99_s,
        "latency_max_s": report.latency_max_s}, indent=1) + "\n")
    return [f"{len(acknowledged)} acknowledged readings lost"] if acknowledged else []


DEVICE_CHECK_HELP = """build the bundle, make a Debian bookworm userland of the architecture (the base of
Raspberry Pi OS Bookworm: Python 3.11; mmdebstrap, its maintainer scripts under qemu-user),
install localgg's wheels in it with no package index, and there, in its own mount, PID and
network namespaces (loopback only), start the cloud side and a core, deploy the bundle (the
core picks io.backfill.Runtime's artifact for that machine), follow the corrected readings
for --seconds and wait until the recorder has every one. The CPU is emulated: it takes
minutes. The userland and the wheels are cached in --cache; nothing else is left behind
(the mounts are the namespace's, its processes end with it). Needs root; installs
mmdebstrap, qemu-user-static and binfmt-support (Debian) if missing, and registers qemu
with binfmt_misc (left registered: a system setting, like the packages)."""


def device_check_arguments(args: list[str]):
    import argparse
    import devicecheck
    parser = argparse.ArgumentParser(prog="python3 scripts/dev.py device-check", description=DEVICE_CHECK_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=sorted(devicecheck.ARCHES), required=True)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the pipeline runs (default 60)")
    parser.add_argument("--mirror", help="the Debian mirror (default: the one this machine's apt uses for "
                                         f"{devicecheck.SUITE})")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "backfill" / "device"
    parser.add_argument("--cache", type=Path, default=cache, help=f"the userland and wheels (default {cache})")
    parser.add_argument("--deploy-timeout", type=float, default=1800.0,
                        help="the longest wait for the deployment, seconds (default 1800)")
    parser.add_argument("--drain-timeout", type=float, default=600.0,
                        help="the longest wait for the recorder to have every reading (default 600)")
    parsed = parser.parse_args(args)
    for key, low in (("seconds", 5), ("deploy_timeout", 60), ("drain_timeout", 30)):
        if getattr(parsed, key) < low:
            parser.error(f"--{key.replace('_', '-')} must be at least {low}")
    return parsed


def cmd_device_check(args: list[str]) -> int:
    import devicecheck
    import devicehost
    options = device_check_arguments(args)
    if os.geteuid() != 0:
        print("device-check needs root (unshare, chroot, mount, and mmdebstrap as root).", file=sys.stderr)
        return 1
    return devicehost.check(devicecheck.ARCHES[options.arch], options, ensure_package=ensure_package,
                            ensure_venv=ensure_venv, python=str(PYTHON), root=ROOT, say=say)


COMMANDS = {"run": cmd_run, "test": cmd_test, "bench": cmd_bench, "device-check": cmd_device_check}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    os.chdir(ROOT)
    return COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
