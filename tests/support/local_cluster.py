"""A throwaway single-node SLURM cluster and PostgreSQL server, to try the scale-out path on one machine.

`python -m tests.support.local_cluster` (as root) installs Debian's packages when they are missing,
starts munge, slurmctld, slurmd and a PostgreSQL server from temporary folders on free ports,
waits until `sinfo` and `pg_isready` answer, prints the two lines a shell needs, and on exit
(Ctrl-C, SIGTERM, the end of `-- COMMAND`, an error) stops them and deletes their files. Nothing
of a service already running on the machine is used or touched: own sockets, ports, key, configs.
"""

import argparse
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = {"munged": "munge", "slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client"}
POSTGRES_PACKAGE = "postgresql"
PARTITION = "debug"
STORAGE_ENV = "EXPFRAME_STORAGE"
READY_TIMEOUT_S = 60


class ClusterError(RuntimeError):
    """A server that would not start: its log's last lines are in the message."""


@dataclass
class LocalCluster:
    """What a client needs: `env` holds SLURM_CONF and EXPFRAME_STORAGE for the processes it starts."""

    folder: Path
    slurm_conf: Path | None = None
    storage_url: str | None = None
    partition: str = PARTITION
    cpus: int = 1
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {}
        if self.slurm_conf:
            env["SLURM_CONF"] = str(self.slurm_conf)
        if self.storage_url:
            env[STORAGE_ENV] = self.storage_url
        return env

    def shell_lines(self) -> list[str]:
        return [f"export {k}='{v}'" for k, v in self.env.items()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_packages(slurm: bool, postgres: bool) -> list[str]:
    needed = [pkg for binary, pkg in PACKAGES.items() if slurm and not _which(binary)]
    if postgres and not _postgres_bin():
        needed.append(POSTGRES_PACKAGE)
    return needed


def install(packages: list[str]) -> None:
    """Debian's packages; their own services stay stopped (no init system runs them in a container,
    and policy-rc.d, where present, refuses them)."""
    if not packages:
        return
    print(f"local_cluster: installing Debian packages {' '.join(packages)} (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise ClusterError(f"apt-get install {' '.join(packages)} failed:\n{done.stderr[-2000:]}")


@contextlib.contextmanager
def local_cluster(slurm: bool = True, postgres: bool = True, cpus: int | None = None) -> Iterator[LocalCluster]:
    """The servers, running for the `with` block; stopped and deleted afterwards, whatever happened."""
    if os.geteuid() != 0:
        raise ClusterError("the local cluster needs root (slurmd runs jobs as any user; packages install with apt-get)")
    install(missing_packages(slurm, postgres))
    folder = Path(tempfile.mkdtemp(prefix="expframe-cluster-"))
    folder.chmod(0o755)  # the postgres user reaches its own sub-folder through it
    cluster = LocalCluster(folder=folder, cpus=cpus or os.cpu_count() or 1)
    try:
        if slurm:
            start_slurm(cluster)
        if postgres:
            start_postgres(cluster)
        yield cluster
    finally:
        stop(cluster)


def start_slurm(cluster: LocalCluster) -> None:
    folder = cluster.folder / "slurm"
    for sub in ("state", "spool", "munge"):
        (folder / sub).mkdir(parents=True)
    (folder / "munge").chmod(0o755)  # clients of any user reach the socket; the key stays 0400, root's
    key = folder / "munge" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    munge_socket = folder / "munge" / "munge.socket"
    munge = [
        _which("munged"),
        "--foreground",
        "--force",
        f"--socket={munge_socket}",
        f"--key-file={key}",
        f"--pid-file={folder / 'munge' / 'munged.pid'}",
        f"--log-file={folder / 'munge' / 'munged.log'}",
        f"--seed-file={folder / 'munge' / 'munged.seed'}",
    ]
    _spawn(cluster, munge, folder / "munge" / "munged.out")
    _wait_until(lambda: munge_socket.exists(), "munged", folder / "munge" / "munged.log")
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, munge_socket, cluster.cpus))
    cluster.slurm_conf = conf
    env = {**os.environ, "SLURM_CONF": str(conf)}
    _spawn(cluster, [_which("slurmctld"), "-D", "-f", str(conf)], folder / "slurmctld.out", env)
    _spawn(cluster, [_which("slurmd"), "-D", "-f", str(conf)], folder / "slurmd.out", env)

    def node_idle() -> bool:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc")

    _wait_until(node_idle, "slurmctld and slurmd (sinfo)", folder / "slurmctld.log")


def slurm_conf(folder: Path, munge_socket: Path, cpus: int) -> str:
    """One node (this host) of `cpus` CPUs and this host's memory less 1 GiB, one partition. No
    accounting storage (sacct has nothing to read: the sacct-less case); finished jobs stay known to
    squeue for MinJobAge. KillWait 2 s: scancel reaches a job's processes in seconds."""
    host = socket.gethostname().split(".")[0]
    memory_mb = max(512, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 1024)
    return "\n".join(
        [
            "ClusterName=expframe",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "AuthType=auth/munge",
            f"AuthInfo=socket={munge_socket}",
            "CredType=cred/munge",
            f"StateSaveLocation={folder / 'state'}",
            f"SlurmdSpoolDir={folder / 'spool'}",
            f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={folder / 'slurmctld.log'}",
            f"SlurmdLogFile={folder / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "ReturnToService=2",
            "MinJobAge=600",
            "KillWait=2",
            "InactiveLimit=0",
            "MailProg=/bin/true",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO",
            "",
        ]
    )


def start_postgres(cluster: LocalCluster) -> None:
    """A server of its own (initdb in a temporary folder, run as the `postgres` user, which the
    package creates), listening on 127.0.0.1 only, password authentication for every connection."""
    bin_dir = Path(_postgres_bin())
    folder = cluster.folder / "postgres"
    folder.mkdir()
    owner = pwd.getpwnam("postgres")
    os.chown(folder, owner.pw_uid, owner.pw_gid)
    password = secrets.token_urlsafe(16)
    pwfile = folder / "pwfile"
    pwfile.write_text(password)
    os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    pwfile.chmod(0o600)
    data = folder / "data"
    as_postgres = ["runuser", "-u", "postgres", "--"]
    initdb = [*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-U", "expframe", f"--pwfile={pwfile}"]
    done = subprocess.run([*initdb, "--auth=scram-sha-256", "-E", "UTF8"], capture_output=True, text=True)
    pwfile.unlink()
    if done.returncode != 0:
        raise ClusterError(f"initdb failed: {done.stderr.strip()[-1000:]}")
    port = free_port()
    server = [
        *as_postgres,
        str(bin_dir / "postgres"),
        "-D",
        str(data),
        "-p",
        str(port),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"unix_socket_directories={folder}",
        "-c",
        "max_connections=100",
    ]
    _spawn(cluster, server, folder / "postgres.log")
    ready = [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
    _wait_until(lambda: subprocess.run(ready).returncode == 0, "PostgreSQL (pg_isready)", folder / "postgres.log")
    env = {**os.environ, "PGPASSWORD": password}
    create = [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "expframe", "expframe"]
    done = subprocess.run(create, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise ClusterError(f"createdb failed: {done.stderr.strip()}")
    cluster.storage_url = f"postgresql://expframe:{password}@127.0.0.1:{port}/expframe"


def stop(cluster: LocalCluster) -> None:
    """Jobs still queued or running are cancelled first (slurmstepd, which runs them, leaves slurmd's
    process group); then SIGTERM, SIGKILL after 10 s, in reverse start order; then the folder goes."""
    if cluster.slurm_conf and any(p.poll() is None for p in cluster.processes):
        env = {**os.environ, "SLURM_CONF": str(cluster.slurm_conf)}
        subprocess.run(["scancel", f"--partition={cluster.partition}"], env=env, capture_output=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            queue = subprocess.run(["squeue", "--noheader", "--format=%i"], env=env, capture_output=True, text=True)
            if queue.returncode != 0 or not queue.stdout.strip():
                break
            time.sleep(0.2)
    for process in reversed(cluster.processes):
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for process in reversed(cluster.processes):
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    shutil.rmtree(cluster.folder, ignore_errors=True)


def _spawn(cluster: LocalCluster, cmd: list[str], log: Path, env: dict | None = None) -> None:
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    cluster.processes.append(process)


def _wait_until(ready, what: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else ["(no log)"]
    raise ClusterError(f"{what} did not answer within {READY_TIMEOUT_S} s; {log}:\n" + "\n".join(tail))


def _which(binary: str) -> str | None:
    return shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin:/usr/bin")


def _postgres_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    return str(Path(found[-1]).parent) if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.local_cluster",
        description="Start a throwaway single-node SLURM cluster and PostgreSQL server (as root); "
        "stop them and delete their files on exit.",
    )
    parser.add_argument("--no-slurm", action="store_true", help="PostgreSQL only")
    parser.add_argument("--no-postgres", action="store_true", help="SLURM only")
    parser.add_argument("--cpus", type=int, help="CPUs of the node (default: this machine's)")
    parser.add_argument("--install", action="store_true", help="install the missing Debian packages, start nothing")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND: run it with the servers up, then stop")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.install:
            install(missing_packages(slurm=not args.no_slurm, postgres=not args.no_postgres))
            return 0
        with local_cluster(slurm=not args.no_slurm, postgres=not args.no_postgres, cpus=args.cpus) as cluster:
            if command:
                return subprocess.run(command, env={**os.environ, **cluster.env}).returncode
            print("\n".join(cluster.shell_lines()), flush=True)
            print("local_cluster: running; Ctrl-C stops the servers and deletes their files", file=sys.stderr)
            signal.pause()
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
