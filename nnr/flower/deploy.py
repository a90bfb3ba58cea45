"""A local Flower deployment (flwr 1.42): one `flower-superlink` and N `flower-supernode` processes on
127.0.0.1, and `flwr run` of an app on them, all within a bounded time.

    with LocalDeployment(workdir, timeout=600) as dep:      # the SuperLink starts
        dep.add_node({"partition-id": 0, "num-partitions": 2})
        dep.add_node({"partition-id": 1, "num-partitions": 2})
        dep.run_app("examples/flower_deployment", {"rounds": 3})
    # every process started (and every process they started) is gone here

In flwr 1.42 the SuperLink serves its Fleet, Control and Runtime APIs on one HTTP port, and each
SuperNode its Runtime API on another; they are free ports chosen at run time (parallel runs do not
collide). `flwr run` takes the SuperLink's address from a connection in the Flower configuration file
($FLWR_HOME/config.toml, [superlink.nnr-local]), not from the app's pyproject.toml. Every process
has its own FLWR_HOME under `workdir` (configuration, installed apps) and runs in its own process
group with NNR_DEPLOYMENT=<workdir> in its environment, which is how `stop` finds the processes
Flower starts on its own (the SuperLink's SuperExec runs in a session of its own): SIGTERM, then
SIGKILL after a grace period. The SuperLink runs with runtime dependency
installation off: the app runs in this Python environment. POSIX only (process groups, /proc)."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from nnr.errors import NNRError

HOST = "127.0.0.1"
CONNECTION = "nnr-local"          # the SuperLink connection's name in the Flower configuration file
MARKER = "NNR_DEPLOYMENT"


class DeploymentError(NNRError):
    """A process of the local Flower deployment failed, or the deployment ran out of time."""


def free_ports(n):
    """n distinct TCP ports on 127.0.0.1 that are free now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def flower_command(name):
    """Path of a Flower executable (flower-superlink, flower-supernode, flwr) of this Python."""
    here = Path(sys.executable).parent / name
    path = str(here) if here.exists() else shutil.which(name)
    if path is None:
        raise DeploymentError(f"{name} not found next to {sys.executable} or on PATH; "
                              f'pip install "nnr[flower]" installs flwr and its commands')
    return path


def toml_value(v):
    """A scalar as TOML (flwr's --run-config and --node-config parse TOML)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise DeploymentError(f"config value {v!r} is not a bool, int, float or string")


def alive(pid):
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def processes_of(workdir):
    """PIDs of live processes whose environment carries NNR_DEPLOYMENT=<workdir> (zombies excluded)."""
    tag = f"{MARKER}={os.path.abspath(workdir)}".encode()
    pids = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if tag not in f.read().split(b"\0"):
                    continue
        except OSError:                 # gone meanwhile, or not ours to read
            continue
        if alive(entry):
            pids.append(int(entry))
    return pids


class LocalDeployment:
    """One SuperLink and any number of SuperNodes on 127.0.0.1. `timeout` (seconds) bounds the start
    and the runs: past it they raise DeploymentError; `stop` then takes at most about 3 x `grace`."""

    def __init__(self, workdir, *, timeout=600.0, grace=10.0, env=None, echo=False):
        self.workdir = Path(workdir).resolve()
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.grace = grace
        self.echo = echo                 # copy the `flwr run` log (the ServerApp's) to stdout
        self.env = dict(os.environ if env is None else env)
        self.env.update({"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                         "PYTHONUNBUFFERED": "1", MARKER: str(self.workdir)})
        self.superlink = None
        self.port = None
        self.nodes = []                  # [(node config, Popen or None when stopped)]
        self.started = []                # every Popen, in start order

    # -- life cycle -------------------------------------------------------------------------------
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def remaining(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeploymentError(f"the local Flower deployment exceeded its time limit of {self.timeout:.0f} s "
                                  f"(logs in {self.workdir / 'logs'})")
        return left

    def start(self):
        """Start the SuperLink and wait until it accepts connections."""
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.port, = free_ports(1)
        self.superlink = self._spawn("superlink", [flower_command("flower-superlink"), "--insecure", "--host", HOST,
                                                   "--port", str(self.port),
                                                   "--disable-runtime-dependency-installation"])
        while True:
            self.remaining()
            if self.superlink.poll() is not None:
                raise DeploymentError(f"flower-superlink exited with code {self.superlink.returncode}: "
                                      f"{self._tail('superlink')}")
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        home = self._home("cli")
        (home / "config.toml").write_text(f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                                          f'address = "{HOST}:{self.port}"\ninsecure = true\n')

    def add_node(self, node_config):
        """Start a SuperNode with `node_config` ({"partition-id": 0, ...}); returns its index."""
        if self.superlink is None:
            raise DeploymentError("start the SuperLink before adding SuperNodes")
        index = len(self.nodes)
        port, = free_ports(1)
        conf = " ".join(f"{k}={toml_value(v)}" for k, v in node_config.items())
        proc = self._spawn(f"node-{index}", [flower_command("flower-supernode"), "--insecure",
                                             "--superlink", f"{HOST}:{self.port}", "--port", str(port),
                                             "--node-config", conf])
        self.nodes.append((dict(node_config), proc))
        return index

    def stop_node(self, index):
        """Stop SuperNode `index` (SIGTERM: it leaves the SuperLink; SIGKILL after the grace period).
        Its state (Context.state of its runs) is lost; `add_node` with the same config starts a new one."""
        conf, proc = self.nodes[index]
        if proc is not None:
            self._terminate([proc])
            self.nodes[index] = (conf, None)

    def run_app(self, app_dir, run_config=None, while_running=None):
        """`flwr run <app_dir> --stream` with `run_config` overrides; waits for the run to end, calling
        `while_running(self)` about five times a second meanwhile. Returns the path of its log (the
        ServerApp's log as `flwr run --stream` shows it)."""
        if self.superlink is None:
            raise DeploymentError("start the SuperLink before running an app")
        overrides = self.workdir / "run-config.toml"
        overrides.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in (run_config or {}).items()))
        log = self.workdir / "logs" / "flwr-run.log"
        cmd = [flower_command("flwr"), "run", str(Path(app_dir).resolve()), CONNECTION, "--stream",
               "--run-config", str(overrides)]
        proc = self._spawn("flwr-run", cmd, home="cli", log=log)
        try:
            while proc.poll() is None:
                self.remaining()         # raises when out of time
                self._check_alive()
                if while_running is not None:
                    while_running(self)
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                self._terminate([proc])
        if self.echo:
            sys.stdout.write(log.read_text(errors="replace"))
        if proc.returncode != 0:
            raise DeploymentError(f"flwr run exited with code {proc.returncode}: {self._tail('flwr-run')}")
        return log

    def _check_alive(self):
        """Raise DeploymentError if the SuperLink or a SuperNode exited on its own."""
        for name, proc in [("superlink", self.superlink)] + [(f"node-{i}", p) for i, (_, p) in enumerate(self.nodes)]:
            if proc is not None and proc.poll() is not None:
                raise DeploymentError(f"flower-{'superlink' if name == 'superlink' else 'supernode'} ({name}) "
                                      f"exited with code {proc.returncode}: {self._tail(name)}")

    def stop(self):
        """Stop every process: SuperNodes, SuperLink, and what they started. Raises DeploymentError if
        one survives SIGKILL."""
        self._terminate([p for _, p in self.nodes if p is not None])
        self.nodes = [(c, None) for c, _ in self.nodes]
        self._terminate([p for p in self.started if p.poll() is None])
        left = self._signal_strays(signal.SIGKILL, wait=self.grace)
        if left:
            raise DeploymentError(f"processes of the local Flower deployment survive SIGKILL: {left}")

    def pids(self):
        """PIDs of the processes this deployment started directly (also listed in logs/pids)."""
        return [p.pid for p in self.started]

    # -- helpers ----------------------------------------------------------------------------------
    def _home(self, name):
        home = self.workdir / "home" / name
        home.mkdir(parents=True, exist_ok=True)
        return home

    def _spawn(self, name, cmd, home=None, log=None):
        env = dict(self.env, FLWR_HOME=str(self._home(home or name)))
        log = log or self._log_path(name)
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=self.workdir, start_new_session=True)
        self.started.append(proc)
        with open(self.workdir / "logs" / "pids", "a") as f:       # for whoever checks nothing is left
            f.write(f"{proc.pid} {name}\n")
        return proc

    def _log_path(self, name):
        path = self.workdir / "logs" / f"{name}.log"
        n = 1
        while path.exists():             # a restarted node gets a new log
            n += 1
            path = self.workdir / "logs" / f"{name}.{n}.log"
        return path

    def _tail(self, name, lines=15):
        logs = list((self.workdir / "logs").glob(f"{name}.log")) + list((self.workdir / "logs").glob(f"{name}.*.log"))
        logs.sort(key=lambda p: p.stat().st_mtime)
        text = logs[-1].read_text(errors="replace").splitlines()[-lines:] if logs else []
        return "\n".join(["(log tail)"] + text)

    def _terminate(self, procs):
        """SIGTERM each process group; SIGKILL what is left after the grace period."""
        for p in procs:
            _killpg(p.pid, signal.SIGTERM)
        end = time.monotonic() + self.grace
        for p in procs:
            try:
                p.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                _killpg(p.pid, signal.SIGKILL)
                p.wait()
        for p in procs:
            _killpg(p.pid, signal.SIGKILL)   # the group's other members (the node's SuperExec, ClientApps)

    def _signal_strays(self, sig, wait):
        """Processes started by Flower itself outside our process groups: SIGTERM, then `sig`."""
        for pid in processes_of(self.workdir):
            _kill(pid, signal.SIGTERM)
        end = time.monotonic() + wait
        while processes_of(self.workdir) and time.monotonic() < end:
            time.sleep(0.1)
        for pid in processes_of(self.workdir):
            _kill(pid, sig)
        time.sleep(0.2)
        return processes_of(self.workdir)


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
