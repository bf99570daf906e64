"""Running a scenario (cli/devnet/scenario.py) against real validator processes.

``run_scenario`` creates a fresh network in a temporary home, starts it, offers the load
(cli/devnet/workload.py, which writes the ack log), carries out the fault timeline at
its times, lets the network settle, runs the checker (cli/devnet/check.py) over every
node, and judges each phase against what the scenario expects of it. Heights are
sampled from every node four times a second, so the report (and the picture drawn from
it, cli/devnet/timeline.py) shows what each node did and when.

A bank the timeline made to equivocate or double-vote must be accused by a committed
proof. Its last conflicting messages may go out just before the timeline ends, and their
proof is committed a height or two after an honest node holds both: so, once the network
has settled, the runner waits up to ``EVIDENCE_HEIGHTS`` more heights for every running
node to list a proof accusing each such bank, then checks (which names any bank still
unaccused).

Process faults are signals and restarts of a node's process (``LocalNet``, which owns
the processes and stops them all at the end). Network and byzantine faults are set
inside the nodes, on their fault layer, through their admin API: cli/devnet/faults.py,
as `depnet fault` sets them.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cli.devnet import faults
from cli.devnet.check import CheckReport, check_chains, read_acks, read_network
from cli.devnet.client import NodeClient
from cli.devnet.errors import DevnetError, WaitTimeout
from cli.devnet.health import console_log
from cli.devnet.load import funded_template
from cli.devnet.localnet import LocalNet
from cli.devnet.scenario import (
    EQUIVOCATING_MODES,
    PROCESS_KINDS,
    Phase,
    Scenario,
    ScenarioError,
    Step,
    number_after,
    oneway_ends,
    partition_groups,
    resolve,
)
from cli.devnet.wait import until
from cli.devnet.workload import Committed, Workload
from consensus.validators import ValidatorSet
from node.config import load_template

SAMPLE_EVERY = 0.25
SAMPLE_TIMEOUT = 0.5
START_TIMEOUT = 120.0  # the machine is shared: processes importing libp2p take a while
SETTLE_TIMEOUT = 60.0
LIVENESS_GRACE = 1.0  # a block already being decided when a fault starts may still commit
MIN_JUDGED = 3.0  # a phase shorter than this is too short to expect a block in it
EVIDENCE_HEIGHTS = 5  # after settling, heights to wait for proofs of injected equivocations
EVIDENCE_TIMEOUT = 30.0  # the same wait's bound in seconds, should the chain not advance


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the load started
    bank: str
    height: int | None  # None: the node did not answer


@dataclass(frozen=True)
class Applied:
    """A step as carried out: when it was due, when it was done, the command run."""

    due: float
    at: float
    command: str


@dataclass(frozen=True)
class PhaseResult:
    phase: Phase
    start: float  # when the phase really began (its first step done)
    end: float
    heights_start: dict[str, int | None]
    heights_end: dict[str, int | None]
    blocks: int
    tx_per_s: float
    recovery_s: float | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "start": round(self.start, 2),
            "end": round(self.end, 2),
            "opened_by": self.phase.opened_by,
            "faults": list(self.phase.faults),
            "expected": {
                "safety": True,
                "liveness": self.phase.liveness,
                "recovery_s": self.phase.recovery,
            },
            "heights_start": self.heights_start,
            "heights_end": self.heights_end,
            "blocks": self.blocks,
            "tx_per_s": round(self.tx_per_s, 1),
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 2),
            "verdict": "ok" if self.ok else "fail",
            "problems": list(self.problems),
        }


@dataclass
class ScenarioReport:
    scenario: Scenario
    seed: int
    run_seconds: float
    phases: list[PhaseResult]
    check: CheckReport
    load: dict[str, Any]
    applied: list[Applied]
    samples: list[Sample]
    committed: list[Committed]
    problems: list[str] = field(default_factory=list)  # of the run as a whole

    @property
    def ok(self) -> bool:
        return self.check.ok and not self.problems and all(p.ok for p in self.phases)

    @property
    def blocks_committed(self) -> int:
        return max((s.height or 0 for s in self.samples), default=0)

    @property
    def recovery_s(self) -> float | None:
        """The recovery measured after the last step that heals: from the moment the
        network is whole again until every node commits above where it stood."""
        times = [p.recovery_s for p in self.phases if p.recovery_s is not None]
        return times[-1] if times else None

    def bands(self) -> list[tuple[float, float | None, str]]:
        """The fault bands at the times the steps were really carried out."""
        done = {a.due: a.at for a in self.applied}
        return [
            (done.get(start, start), None if end is None else done.get(end, end), command)
            for start, end, command in self.scenario.bands(self.seed)
        ]

    def draw(self, path: Path) -> None:
        """The timeline picture (cli/devnet/timeline.py) of this run."""
        from cli.devnet.timeline import draw_timeline

        heights: dict[str, list[tuple[float, int | None]]] = {b: [] for b in self.scenario.banks}
        for sample in self.samples:
            heights[sample.bank].append((sample.at, sample.height))
        end = max([s.at for s in self.samples] + [self.scenario.load.duration])
        per_second = [0] * (int(end) + 1)
        for block in self.committed:
            if 0 <= block.at <= end:
                per_second[int(block.at)] += block.txs
        scenario = self.scenario
        title = (
            f"{scenario.name}: {scenario.validators} validators, {scenario.load.rate} tx/s "
            f"offered, seed {self.seed} — {'PASS' if self.ok else 'FAIL'}"
        )
        draw_timeline(path, title, heights, per_second, self.bands())

    def to_json(self) -> dict[str, Any]:
        scenario = self.scenario
        heights: dict[str, list[list[float]]] = {}
        for sample in self.samples:
            if sample.height is not None:
                heights.setdefault(sample.bank, []).append([round(sample.at, 2), sample.height])
        return {
            "scenario": scenario.name,
            "file": scenario.path,
            "description": scenario.description,
            "validators": scenario.validators,
            "load": asdict(scenario.load) | self.load,
            "seed": self.seed,
            "verdict": "ok" if self.ok else "fail",
            "run_seconds": round(self.run_seconds, 1),
            "blocks_committed": self.blocks_committed,
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 2),
            "problems": self.problems,
            "phases": [p.to_json() for p in self.phases],
            "check": self.check.to_json(),
            "steps": [asdict(a) for a in self.applied],
            "heights": heights,
            "blocks": [[round(c.at, 2), c.height, c.txs] for c in self.committed],
        }


def run_scenario(
    scenario: Scenario,
    out: Path,
    *,
    seed: int = 1,
    progress: Callable[[str], None] | None = None,
) -> ScenarioReport:
    """Run ``scenario`` on a fresh network; write ``report.json``, ``acks.log`` and
    ``timeline.png`` into ``out``."""
    say = progress or (lambda _msg: None)
    out.mkdir(parents=True, exist_ok=True)
    acks = out / "acks.log"
    acks.write_text("")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="depnet-scenario-") as tmp:
        per_bank = max(1, scenario.load.accounts // scenario.validators)
        template = funded_template(per_bank, base=load_template(banks=scenario.validators))
        with LocalNet.create(Path(tmp) / "net", template) as ln:
            try:
                say(f"starting {scenario.validators} validators")
                ln.start_all()
                ln.wait_healthy(timeout=START_TIMEOUT)
                report = _Run(scenario, ln, acks, seed, say).run()
            except (DevnetError, AssertionError) as exc:  # LocalNetError is an AssertionError
                logs = _keep_logs(ln, out)
                what = str(exc).splitlines()[0]
                raise ScenarioError(f"{scenario.name}: {what} (node logs in {logs})") from None
    report.run_seconds = time.monotonic() - started
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    report.draw(out / "timeline.png")
    return report


def _keep_logs(ln: LocalNet, out: Path) -> Path:
    """Copy every node's console output and log out of the temporary home (which is
    about to be removed), for a run that failed."""
    folder = out / "logs"
    folder.mkdir(exist_ok=True)
    for bank in ln.banks:
        home = ln.home(bank)
        for source in (console_log(home), home.log_file):
            if source.exists():
                shutil.copyfile(source, folder / f"{bank}-{source.name}")
    return folder


class _Run:
    """One run on a started network: load, steps, settling, check, judging."""

    def __init__(
        self, scenario: Scenario, ln: LocalNet, acks: Path, seed: int, say: Callable[[str], None]
    ) -> None:
        self.scenario = scenario
        self.ln = ln
        self.acks = acks
        self.seed = seed
        self.say = say
        self.faults = Faults(ln, seed)
        self.monitor = HeightMonitor(ln)
        self.validators = ValidatorSet(ln.genesis.validators)
        self.bank_of = {b.validator: b.name for b in ln.genesis.banks}

    def run(self) -> ScenarioReport:
        scenario, load = self.scenario, self.scenario.load
        workload = Workload(self.ln.net, load.rate, load.duration, self.acks, self.seed)
        t0 = time.monotonic()
        self.monitor.start(t0)
        workload.start(t0)
        applied: list[Applied] = []
        proposers: dict[int, str] = {}  # the proposer when each fault was set
        problems: list[str] = []
        self.say(f"load: {load.rate} tx/s for {load.duration:g} s")
        try:
            for step in scenario.steps(self.seed):
                _sleep_until(t0 + step.at)
                command = self._resolve(step, proposers)
                self.say(f"{step.at:6.1f} s  {command}")
                self.faults.apply(command)
                applied.append(Applied(step.at, time.monotonic() - t0, command))
            _sleep_until(t0 + load.duration)
            workload.stop_sending()
            self.faults.settle()
            self.say("settling: every running node at one height, every sent tx committed")
            if not self._settle(workload):
                problems.append(
                    f"did not settle within {SETTLE_TIMEOUT:g} s after the load: "
                    f"{workload.pending()} sent txs uncommitted, heights {self._heights()}"
                )
            injected = equivocators(a.command for a in applied)
            if injected:
                accused = ", ".join(sorted(injected))
                self.say(f"waiting up to {EVIDENCE_HEIGHTS} heights for proofs accusing {accused}")
                self._await_evidence(injected)
        finally:
            self.monitor.stop()
            workload.close()
        end = time.monotonic() - t0
        self.say("checking every node")
        check = check_chains(
            read_network(self.ln.net), self.ln.genesis, read_acks(self.acks), injected
        )
        if workload.acked == 0:
            problems.append("no tx of the load was committed")
        phases = judge_phases(
            scenario.phases(self.seed), applied, self.monitor.samples, workload.committed, end
        )
        if problems and phases[-1].phase.liveness is False:
            problems = [p for p in problems if not p.startswith("did not settle")]
        return ScenarioReport(
            scenario=scenario,
            seed=self.seed,
            run_seconds=0.0,
            phases=phases,
            check=check,
            load=workload.stats(),
            applied=applied,
            samples=self.monitor.samples,
            committed=workload.committed,
            problems=problems,
        )

    def _resolve(self, step: Step, proposers: dict[int, str]) -> str:
        """Fill in ``{proposer}``/``{rest}``: the proposer of the next height, except in
        an undo, which names the bank its fault named."""
        if step.undo and step.fault in proposers:
            proposer = proposers[step.fault]
        else:
            height = max((h for h in self._heights().values() if h is not None), default=0)
            proposer = self.bank_of[self.validators.proposer(height + 1, 0)]
            if step.fault is not None:
                proposers[step.fault] = proposer
        return resolve(step.command, proposer, self.ln.banks)

    def _heights(self) -> dict[str, int | None]:
        return self.monitor.latest()

    def _settle(self, workload: Workload) -> bool:
        running = [b for b in self.ln.banks if self.ln.alive(b)]

        def settled() -> bool:
            heights = [self.ln.try_get(b, "/status") for b in running]
            if any(h is None for h in heights) or workload.pending():
                return False
            return len({h["height"] for h in heights if h is not None}) == 1

        try:
            until(settled, SETTLE_TIMEOUT, interval=0.25)
        except WaitTimeout:
            return False
        return True

    def _await_evidence(self, injected: set[str]) -> None:
        """Until every running node lists a committed proof accusing each bank of
        ``injected``, or the chain has grown ``EVIDENCE_HEIGHTS`` past where it stood (then
        the check reports what is missing)."""
        running = [b for b in self.ln.banks if self.ln.alive(b)]
        first = self._top(running)

        def committed() -> bool:
            if self._top(running) >= first + EVIDENCE_HEIGHTS:
                return True
            listed = [self.ln.try_get(b, "/evidence") for b in running]
            return all(
                found is not None and injected <= {e["bank"] for e in found["evidence"]}
                for found in listed
            )

        with contextlib.suppress(WaitTimeout):
            until(committed, EVIDENCE_TIMEOUT, interval=0.25)

    def _top(self, banks: Iterable[str]) -> int:
        statuses = [self.ln.try_get(b, "/status") for b in banks]
        return max((s["height"] for s in statuses if s is not None), default=0)


def equivocators(commands: Iterable[str]) -> set[str]:
    """The banks that ``commands`` (steps as carried out) set to equivocate or double-vote."""
    banks = set()
    for command in commands:
        kind, *args = command.split()
        if kind == "byzantine" and args[1:2] and args[1] in EQUIVOCATING_MODES:
            banks.add(args[0])
    return banks


class Faults:
    """Carries out a step: process faults on the processes, the others inside the nodes.
    Every failure is a ScenarioError naming the command."""

    def __init__(self, ln: LocalNet, seed: int) -> None:
        self.process = ProcessFaults(ln)
        self.net = ln.net
        self.seed = seed
        self.in_nodes = False  # a network or byzantine fault was set

    def apply(self, command: str) -> None:
        kind, *args = command.split()
        if kind in PROCESS_KINDS:
            self.process.apply(command)
            return
        self.in_nodes = True
        try:
            self._in_nodes(kind, args)
        except DevnetError as exc:
            raise ScenarioError(f"{command}: {exc}") from None

    def _in_nodes(self, kind: str, args: list[str]) -> None:
        net, seed = self.net, self.seed
        frames = faults.Frames(_after(args, "--from"), _after(args, "--to"), _after(args, "--kind"))
        if kind == "partition" and args[:1] == ["--oneway"]:
            ends = oneway_ends(args[1:])
            assert ends is not None  # the scenario file was checked when read
            for src in ends[0].split(","):
                for dst in ends[1].split(","):
                    faults.partition_oneway(net, src, dst)
        elif kind == "partition":
            faults.partition(net, partition_groups(args), seed=seed)
        elif kind == "heal":
            faults.heal(net)
        elif kind == "clear":
            faults.clear(net)
        elif kind == "drop":
            faults.drop(net, _number(args, "--rate"), frames, seed=seed)
        elif kind == "duplicate":
            faults.duplicate(net, _number(args, "--rate"), frames, seed=seed)
        elif kind == "delay":
            jitter = number_after(args, "--jitter") or 0
            faults.delay(net, int(_number(args, "--ms")), int(jitter), frames, seed=seed)
        elif kind == "skew":
            faults.skew(net, args[0], int(_number(args, "--ms")))
        elif kind == "byzantine":
            faults.byzantine(net, args[0], args[1], seed=seed)

    def settle(self) -> None:
        """After the timeline: every process running can be read, no fault in force."""
        self.process.settle()
        if self.in_nodes:
            faults.clear(self.net)


def _after(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args[:-1] else None


def _number(args: list[str], flag: str) -> float:
    value = number_after(args, flag)
    assert value is not None  # the scenario file was checked when read
    return value


class ProcessFaults:
    """Process faults on a LocalNet, by bank; remembers which nodes it paused, so a
    restart or a wipe of a paused node resumes it first (a stopped process cannot act on
    SIGTERM)."""

    def __init__(self, ln: LocalNet) -> None:
        self.ln = ln
        self.paused: set[str] = set()

    def apply(self, command: str) -> None:
        kind, bank = command.split()[:2]
        try:
            self._process(kind, bank)
        except (DevnetError, AssertionError) as exc:
            raise ScenarioError(f"{command}: {str(exc).splitlines()[0]}") from None

    def _process(self, kind: str, bank: str) -> None:
        ln = self.ln
        if bank in self.paused and kind != "pause":
            self.paused.discard(bank)
            if kind != "kill":  # SIGKILL ends a stopped process too
                ln.resume(bank)
            if kind == "resume":
                return
        if kind == "kill":
            ln.kill(bank)
        elif kind == "pause":
            ln.pause(bank)
            self.paused.add(bank)
        elif kind == "restart":
            ln.restart(bank)
        elif kind == "wipe":
            if ln.alive(bank):
                ln.terminate(bank)
            ln.wipe_data(bank)
            ln.start(bank)

    def settle(self) -> None:
        """After the timeline: resume paused nodes, so every process can be read."""
        for bank in sorted(self.paused):
            self.ln.resume(bank)
        self.paused.clear()


class HeightMonitor:
    """One thread per node sampling its committed height."""

    def __init__(self, ln: LocalNet) -> None:
        self.entries = ln.entries
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self, t0: float) -> None:
        for bank in self.entries:
            thread = threading.Thread(target=self._sample, args=(bank, t0), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def latest(self) -> dict[str, int | None]:
        last: dict[str, int | None] = {}
        with self._lock:
            for sample in self.samples:
                last[sample.bank] = sample.height
        return last

    def _sample(self, bank: str, t0: float) -> None:
        with NodeClient(self.entries[bank], timeout=SAMPLE_TIMEOUT) as client:
            while not self._stop.is_set():
                try:
                    height: int | None = client.status()["height"]
                except DevnetError:
                    height = None
                with self._lock:
                    self.samples.append(Sample(time.monotonic() - t0, bank, height))
                self._stop.wait(SAMPLE_EVERY)


def judge_phases(
    phases: Sequence[Phase],
    applied: Sequence[Applied],
    samples: Sequence[Sample],
    committed: Sequence[Committed],
    end: float,
) -> list[PhaseResult]:
    """Each phase against its expectations, on the times the steps were really done."""
    done: dict[float, float] = {}
    for step in applied:
        done[step.due] = max(done.get(step.due, step.at), step.at)
    starts = [done.get(p.start, p.start) for p in phases]
    results = []
    for i, phase in enumerate(phases):
        start = starts[i]
        stop = starts[i + 1] if i + 1 < len(phases) else end
        before, after = _heights_at(samples, start), _heights_at(samples, stop)
        top_before = _top(before)
        top_after = _top(after)
        txs = sum(c.txs for c in committed if start <= c.at < stop)
        seconds = max(stop - start, 1e-9)
        recovery = _recovery(samples, start, top_before) if phase.heals else None
        problems = []
        if phase.liveness is False:
            graced = _top(_heights_at(samples, min(start + LIVENESS_GRACE, stop)))
            if top_after > graced:
                problems.append(
                    f"{top_after - graced} blocks committed while no commit was expected"
                )
        elif (
            phase.liveness
            and stop - start >= MIN_JUDGED
            and top_after == top_before
            and phase.recovery is None
        ):
            problems.append(f"no block committed in {stop - start:.1f} s")
        if phase.recovery is not None:
            if recovery is None:
                problems.append(f"no recovery observed (bound {phase.recovery:g} s)")
            elif recovery > phase.recovery:
                problems.append(
                    f"recovered in {recovery:.1f} s, over the {phase.recovery:g} s bound"
                )
        results.append(
            PhaseResult(
                phase=phase,
                start=start,
                end=stop,
                heights_start=before,
                heights_end=after,
                blocks=top_after - top_before,
                tx_per_s=txs / seconds,
                recovery_s=recovery,
                problems=tuple(problems),
            )
        )
    return results


def _heights_at(samples: Sequence[Sample], at: float) -> dict[str, int | None]:
    """Each node's last sampled height at or before ``at`` (None: it did not answer);
    its first sample if it has none that early (the start of the run). By bank name."""
    last: dict[str, int | None] = {}
    for sample in samples:
        if sample.at <= at or sample.bank not in last:
            last[sample.bank] = sample.height
    return dict(sorted(last.items()))


def _top(heights: dict[str, int | None]) -> int:
    return max((h for h in heights.values() if h is not None), default=0)


def _recovery(samples: Sequence[Sample], start: float, top: int) -> float | None:
    """Seconds from ``start`` until every node that answers after it has committed a
    block above ``top`` (the highest height any node had at ``start``): the network
    commits again, and nodes that were down or cut off have caught up. A node that never
    answers again (killed for good) is not waited for."""
    first_above: dict[str, float] = {}
    answering: set[str] = set()
    for sample in samples:
        if sample.at < start or sample.height is None:
            continue
        answering.add(sample.bank)
        if sample.height > top and sample.bank not in first_above:
            first_above[sample.bank] = sample.at
    if not answering or answering - first_above.keys():
        return None
    return max(first_above.values()) - start


def _sleep_until(deadline: float) -> None:
    """The timeline's clock: a step runs at its time (a wait on the schedule, not a guess
    at how long something takes)."""
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)
