"""Scenario files: a fault experiment on a live local network, written down in TOML.

A scenario names the network size, the load, a timeline of faults and what is expected
of each phase of the run, as CometBFT's e2e manifests and Jepsen's nemesis schedules do::

    name = "partition-2-2"
    description = "No side holds a quorum: nothing commits until the heal."
    validators = 4

    [load]
    rate = 20            # transfers per second offered over all nodes
    accounts = 8         # funded accounts paying each other, spread over the banks
    duration = "24s"

    [[fault]]
    at = "6s"
    until = "14s"        # undone then (here by `heal`); or write a separate step
    command = "partition JPM,HSBC / DBS,BNP"   # exactly a `depnet fault` command
    liveness = false     # during the fault nothing may commit
    recovery = "10s"     # after it, every running node commits again within 10 s

``[power_cycles]`` (cycles, down, from, to) adds kill/restart pairs of every node at
moments drawn from the run's seed, one node down at a time. A restarted process takes
seconds to answer again, so cycles may overlap a node's start-up: liveness is not judged
inside the cycles' window, only that the network settles after it.

The timeline cuts the run into phases; in each phase safety is always expected, liveness
unless an active fault says ``liveness = false`` (then not one block may commit: the
fault is shown to bite), and a phase that starts when a fault is undone (or with a
healing step: heal, resume, restart, clear) carries that fault's recovery bound.

Parsing builds frozen dataclasses; any mistake is a ``ScenarioError`` whose message is
one line naming the file, the key and what is wrong.
"""

from __future__ import annotations

import random
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from cli.devnet.errors import DevnetError
from node.config import load_template

PROCESS_KINDS = frozenset({"kill", "pause", "resume", "restart", "wipe"})
NETWORK_KINDS = frozenset({"partition", "heal", "drop", "delay", "duplicate", "skew", "clear"})
BYZANTINE_KINDS = frozenset({"byzantine"})
KINDS = PROCESS_KINDS | NETWORK_KINDS | BYZANTINE_KINDS
HEALING_KINDS = frozenset({"heal", "resume", "restart", "clear"})
# Steps that act once rather than staying in force; recovery is measured after them.
INSTANT_KINDS = HEALING_KINDS | {"wipe"}
BYZANTINE_MODES = frozenset({"equivocate", "double-vote", "silent", "invalid-block", "off"})
# The modes that sign two messages for one slot: the check demands a committed proof of each.
EQUIVOCATING_MODES = frozenset({"equivocate", "double-vote"})
# Bank placeholders, resolved when the step is applied: the proposer of the next height,
# and every bank the command does not name otherwise.
PROPOSER = "{proposer}"
REST = "{rest}"

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0}
_TOP_KEYS = {"name", "description", "validators", "slow", "load", "fault", "power_cycles"}
_LOAD_KEYS = {"rate", "accounts", "duration"}
_FAULT_KEYS = {"at", "until", "command", "liveness", "recovery"}
_CYCLE_KEYS = {"cycles", "down", "from", "to", "recovery"}


class ScenarioError(DevnetError):
    """A scenario file that cannot be run as written; the message is one line."""


@dataclass(frozen=True)
class Load:
    rate: int  # transfers per second offered over all nodes
    accounts: int  # funded accounts, spread evenly over the banks
    duration: float  # seconds of load; the fault timeline runs inside it


@dataclass(frozen=True)
class Fault:
    """One step of the timeline: a `depnet fault` command at a time, perhaps undone."""

    at: float
    command: str
    until: float | None = None
    liveness: bool = True  # may blocks commit while this fault is in force?
    recovery: float | None = None  # bound on recovery once it is undone (or it heals)

    @property
    def kind(self) -> str:
        return self.command.split()[0]

    @property
    def args(self) -> list[str]:
        return self.command.split()[1:]

    def undo(self) -> str | None:
        """The command that ends this fault, for ``until``."""
        return _undo(self.command)


@dataclass(frozen=True)
class PowerCycles:
    """Every node killed and restarted ``cycles`` times between ``start`` and ``end``."""

    cycles: int
    down: float  # seconds each node stays down
    start: float
    end: float
    recovery: float | None


@dataclass(frozen=True)
class Step:
    """A command the runner carries out at ``at`` seconds after the load starts."""

    at: float
    command: str
    fault: int | None = None  # index of the fault it starts or undoes (None: power cycles)
    undo: bool = False  # it ends a fault

    @property
    def heals(self) -> bool:
        """Does the network start recovering here (a fault undone, a node back)?"""
        return self.undo or self.kind in INSTANT_KINDS

    @property
    def kind(self) -> str:
        return self.command.split()[0]


@dataclass(frozen=True)
class Phase:
    """A stretch of the run between two steps, with what is expected of it."""

    start: float
    end: float
    faults: tuple[str, ...]  # the commands in force
    liveness: bool | None  # commits expected, none allowed, or not judged (None)
    recovery: float | None  # bound on recovery from the phase start, if any
    opened_by: str  # the commands that start the phase ("" for the first)
    heals: bool  # it starts with a fault undone or a node back: recovery is measured


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    description: str
    validators: int
    load: Load
    faults: tuple[Fault, ...]
    power_cycles: PowerCycles | None = None
    slow: bool = False  # a long variant: run on demand (`make scenarios-long`)

    @property
    def banks(self) -> list[str]:
        return [b["name"] for b in load_template(banks=self.validators)["banks"]]

    @property
    def kinds(self) -> set[str]:
        return {s.kind for s in self.steps(0)}

    def steps(self, seed: int) -> tuple[Step, ...]:
        """Every command with its time, in order: the faults, their undos, and the power
        cycles drawn from ``seed``."""
        steps = []
        for index, fault in enumerate(self.faults):
            steps.append(Step(fault.at, fault.command, index))
            undo = fault.undo()
            if fault.until is not None and undo is not None:
                steps.append(Step(fault.until, undo, index, undo=True))
        if self.power_cycles is not None:
            steps += _power_cycle_steps(self.power_cycles, self.banks, seed)
        return tuple(sorted(steps, key=lambda s: s.at))

    def bands(self, seed: int) -> list[tuple[float, float | None, str]]:
        """(start, end or None for an instant, command) of each fault, for pictures."""
        bands: list[tuple[float, float | None, str]] = []
        for index, fault in enumerate(self.faults):
            if fault.kind in INSTANT_KINDS:
                bands.append((fault.at, None, fault.command))
            else:
                bands.append((fault.at, self._ends(index) or self.load.duration, fault.command))
        if self.power_cycles is not None:
            cycle = _power_cycle_steps(self.power_cycles, self.banks, seed)
            for kill, restart in zip(cycle[::2], cycle[1::2], strict=True):
                bands.append((kill.at, restart.at, kill.command))
        return bands

    def phases(self, seed: int) -> tuple[Phase, ...]:
        """The run cut at every step; each phase carries its expectations."""
        steps = self.steps(seed)
        cuts = sorted({0.0, *(s.at for s in steps if s.at < self.load.duration)})
        windows = [(f.at, self._ends(i), f) for i, f in enumerate(self.faults)]
        phases = []
        for i, start in enumerate(cuts):
            end = cuts[i + 1] if i + 1 < len(cuts) else self.load.duration
            active = [
                f
                for at, until, f in windows
                if at <= start and (until is None or until > start) and f.kind not in INSTANT_KINDS
            ]
            opened = [s for s in steps if s.at == start]
            phases.append(
                Phase(
                    start=start,
                    end=end,
                    faults=tuple(f.command for f in active),
                    liveness=None if self._cycling(start) else all(f.liveness for f in active),
                    recovery=self._recovery_after(opened),
                    opened_by="; ".join(s.command for s in opened),
                    heals=any(s.heals for s in opened),
                )
            )
        return tuple(phases)

    def _cycling(self, time: float) -> bool:
        cycles = self.power_cycles
        return cycles is not None and cycles.start <= time < cycles.end

    def _ends(self, index: int) -> float | None:
        """When fault ``index`` stops: its ``until``, or the first later step that undoes
        it (its undo command, or `clear` for a network fault), or never (None)."""
        fault = self.faults[index]
        if fault.until is not None:
            return fault.until
        undo = fault.undo()
        for later in self.faults[index + 1 :]:
            if later.command == undo or (later.kind == "clear" and fault.kind in NETWORK_KINDS):
                return later.at
        return None

    def _recovery_after(self, opened: list[Step]) -> float | None:
        """The tightest recovery bound of the steps that open a phase: a fault's when it
        is undone (or when it acts at once), the power cycles' after each restart."""
        bounds = []
        for step in opened:
            if step.fault is None:
                cycles = self.power_cycles
                if step.undo and cycles is not None and cycles.recovery is not None:
                    bounds.append(cycles.recovery)
                continue
            fault = self.faults[step.fault]
            if fault.recovery is not None and (step.undo or fault.kind in INSTANT_KINDS):
                bounds.append(fault.recovery)
        return min(bounds) if bounds else None


def _power_cycle_steps(cycles: PowerCycles, banks: list[str], seed: int) -> list[Step]:
    """Kill/restart pairs, every bank ``cycles`` times in a seeded order, one at a time:
    the window is cut into equal slots; each node goes down at a random moment of its slot
    that leaves it at least ``down`` seconds after its restart to start up again."""
    rng = random.Random(seed)
    order = [bank for _ in range(cycles.cycles) for bank in rng.sample(banks, len(banks))]
    slot = (cycles.end - cycles.start) / len(order)
    steps: list[Step] = []
    for n, bank in enumerate(order):
        kill = cycles.start + n * slot + rng.uniform(0, slot - 2 * cycles.down)
        steps += [
            Step(round(kill, 3), f"kill {bank}"),
            Step(round(kill + cycles.down, 3), f"restart {bank}", undo=True),
        ]
    return steps


def _undo(command: str) -> str | None:
    kind, *args = command.split()
    if kind == "kill":
        return f"restart {args[0]}"
    if kind == "pause":
        return f"resume {args[0]}"
    if kind == "partition":
        return "heal"
    if kind in ("drop", "delay", "duplicate"):
        return "clear"
    if kind == "skew":
        return f"skew {args[0]} --ms 0"
    if kind == "byzantine":
        return f"byzantine {args[0]} off"
    return None


# --- reading a file ------------------------------------------------------------------------


def scenario_path(name_or_path: str) -> Path:
    """A path as given, or the name of a file in configs/scenarios/ (with or without .toml)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    stem = path.name.removesuffix(".toml")
    bundled = Path(str(resources.files("configs").joinpath("scenarios", f"{stem}.toml")))
    if bundled.exists():
        return bundled
    raise ScenarioError(f"{name_or_path}: no such scenario file (see `depnet scenario list`)")


def bundled_scenarios() -> list[Path]:
    folder = Path(str(resources.files("configs").joinpath("scenarios")))
    return sorted(folder.glob("*.toml"))


def load_scenario(path: Path | str) -> Scenario:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    return parse_scenario(data, str(path))


def parse_scenario(data: Mapping[str, Any], path: str) -> Scenario:
    """A scenario from a parsed TOML document; ``path`` names it in errors."""
    where = _Where(path)
    where.only(data, _TOP_KEYS, "")
    name = where.text(data, "name", "")
    validators = data.get("validators", 4)
    if type(validators) is not int or validators < 1:
        where.fail("validators", f"must be a positive integer, got {validators!r}")
    banks = [b["name"] for b in load_template(banks=validators)["banks"]]
    if len(banks) != validators:
        where.fail("validators", f"the network template has only {len(banks)} banks")
    load = _load(where, data.get("load"))
    faults_data = data.get("fault", [])
    if not isinstance(faults_data, list):
        where.fail("fault", "must be an array of tables ([[fault]])")
    faults = tuple(
        _fault(where, f"fault[{i}]", item, banks, load.duration)
        for i, item in enumerate(faults_data)
    )
    cycles = None
    if "power_cycles" in data:
        cycles = _power_cycles(where, data["power_cycles"], load.duration, len(banks))
    slow = data.get("slow", False)
    if type(slow) is not bool:
        where.fail("slow", f"must be true or false, got {slow!r}")
    return Scenario(
        name=name,
        path=path,
        description=where.text(data, "description", "", required=False),
        validators=validators,
        load=load,
        faults=faults,
        power_cycles=cycles,
        slow=slow,
    )


class _Where:
    """Raises the one-line error for a key of the file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, what: str) -> None:
        raise ScenarioError(f"{self.path}: {key}: {what}")

    def only(self, table: object, keys: set[str], prefix: str) -> None:
        if not isinstance(table, Mapping):
            self.fail(prefix.rstrip("."), "must be a table")
        assert isinstance(table, Mapping)
        for key in table:
            if key not in keys:
                self.fail(
                    f"{prefix}{key}", f"unknown key (expected one of {', '.join(sorted(keys))})"
                )

    def text(self, table: Mapping, key: str, prefix: str, *, required: bool = True) -> str:
        value = table.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or not value.strip():
            self.fail(
                f"{prefix}{key}", "missing" if value is None else f"must be text, got {value!r}"
            )
        return str(value).strip()

    def duration(
        self, table: Mapping, key: str, prefix: str, *, required: bool = True
    ) -> float | None:
        value = table.get(key)
        if value is None:
            if required:
                self.fail(f"{prefix}{key}", "missing")
            return None
        if type(value) in (int, float) and value >= 0:
            return float(value)
        match = _DURATION.match(value) if isinstance(value, str) else None
        if match is None:
            self.fail(
                f"{prefix}{key}", f"{value!r} is not a duration such as '10s', '500ms' or '2m'"
            )
        assert match is not None
        return float(match.group(1)) * _UNIT[match.group(2)]

    def count(self, table: Mapping, key: str, prefix: str, low: int) -> int:
        value = table.get(key)
        if type(value) is not int or value < low:
            self.fail(
                f"{prefix}{key}",
                "missing" if value is None else f"must be an integer >= {low}, got {value!r}",
            )
        return int(value)  # type: ignore[arg-type]


def _load(where: _Where, data: object) -> Load:
    if data is None:
        where.fail("load", "missing ([load] with rate, accounts, duration)")
    where.only(data, _LOAD_KEYS, "load.")
    assert isinstance(data, Mapping)
    duration = where.duration(data, "duration", "load.")
    assert duration is not None
    if duration <= 0:
        where.fail("load.duration", "must be more than 0 s")
    return Load(
        rate=where.count(data, "rate", "load.", 1),
        accounts=where.count(data, "accounts", "load.", 2),
        duration=duration,
    )


def _fault(where: _Where, key: str, data: object, banks: list[str], duration: float) -> Fault:
    where.only(data, _FAULT_KEYS, f"{key}.")
    assert isinstance(data, Mapping)
    prefix = f"{key}."
    at = where.duration(data, "at", prefix)
    until = where.duration(data, "until", prefix, required=False)
    recovery = where.duration(data, "recovery", prefix, required=False)
    command = where.text(data, "command", prefix)
    assert at is not None
    if at >= duration:
        where.fail(f"{prefix}at", f"{at:g} s is not inside the load's {duration:g} s")
    liveness = data.get("liveness", True)
    if type(liveness) is not bool:
        where.fail(f"{prefix}liveness", f"must be true or false, got {liveness!r}")
    problem = command_problem(command, banks)
    if problem:
        where.fail(f"{prefix}command", f"{command!r}: {problem}")
    if until is not None:
        if until <= at:
            where.fail(f"{prefix}until", f"{until:g} s is not after at = {at:g} s")
        if until >= duration:
            where.fail(f"{prefix}until", f"{until:g} s is not inside the load's {duration:g} s")
        if _undo(command) is None:
            where.fail(
                f"{prefix}until", f"a {command.split()[0]!r} step cannot be undone; drop 'until'"
            )
    if recovery is not None and until is None and command.split()[0] not in INSTANT_KINDS:
        where.fail(
            f"{prefix}recovery",
            "needs 'until' (or a step that acts at once: heal, resume, restart, clear, wipe)",
        )
    return Fault(at, command, until, liveness, recovery)


def command_problem(command: str, banks: list[str]) -> str | None:
    """What is wrong with a fault command for a network of ``banks``, or None. The
    vocabulary is the `depnet fault` commands'."""
    kind, *args = command.split()
    if kind not in KINDS:
        return f"unknown fault {kind!r} (one of {', '.join(sorted(KINDS))})"
    known = {*banks, PROPOSER, REST}

    def bank_list(text: str) -> str | None:
        bad = [b for b in text.split(",") if b not in known]
        return f"unknown bank {bad[0]!r} (the network has {', '.join(banks)})" if bad else None

    if kind in PROCESS_KINDS or kind in ("skew", "byzantine"):
        if not args:
            return f"{kind} needs a bank"
        if args[0] not in known:
            return bank_list(args[0])
    if kind == "byzantine" and (len(args) != 2 or args[1] not in BYZANTINE_MODES):
        return f"byzantine BANK needs one of {', '.join(sorted(BYZANTINE_MODES))}"
    if kind == "skew" and number_after(args, "--ms") is None:
        return "skew BANK needs --ms N"
    if kind == "partition" and args[:1] == ["--oneway"]:
        ends = oneway_ends(args[1:])
        if ends is None:
            return "partition --oneway needs 'A -> B'"
        return bank_list(ends[0]) or bank_list(ends[1])
    if kind == "partition":
        groups = partition_groups(args)
        if len(groups) < 2:
            return "partition needs two groups or more, such as 'JPM,HSBC / DBS,BNP'"
        for group in groups:
            problem = bank_list(",".join(group))
            if problem:
                return problem
    if kind in ("drop", "duplicate"):
        rate = number_after(args, "--rate")
        if rate is None or not 0 <= rate <= 1:
            return f"{kind} needs --rate between 0 and 1"
    if kind == "delay" and number_after(args, "--ms") is None:
        return "delay needs --ms N"
    for flag in ("--from", "--to"):
        if flag in args:
            value = args[args.index(flag) + 1] if args.index(flag) + 1 < len(args) else ""
            problem = bank_list(value)
            if problem:
                return problem
    return None


def partition_groups(args: list[str]) -> list[list[str]]:
    """The groups of `partition JPM,HSBC / DBS,BNP` (the ``/`` may be left out)."""
    return [g.split(",") for g in " ".join(args).replace("/", " ").split()]


def oneway_ends(args: list[str]) -> tuple[str, str] | None:
    """(senders, receivers) of `partition --oneway A -> B` (also ``A->B`` or ``A B``);
    each side may list several banks, comma separated."""
    ends = " ".join(args).replace("->", " ").split()
    return (ends[0], ends[1]) if len(ends) == 2 else None


def number_after(args: list[str], flag: str) -> float | None:
    if flag not in args or args.index(flag) + 1 >= len(args):
        return None
    try:
        return float(args[args.index(flag) + 1])
    except ValueError:
        return None


def _power_cycles(where: _Where, data: object, duration: float, banks: int) -> PowerCycles:
    where.only(data, _CYCLE_KEYS, "power_cycles.")
    assert isinstance(data, Mapping)
    prefix = "power_cycles."
    start = where.duration(data, "from", prefix)
    end = where.duration(data, "to", prefix)
    down = where.duration(data, "down", prefix)
    assert start is not None and end is not None and down is not None
    if not start < end < duration:
        where.fail(f"{prefix}to", f"from < to < the load's {duration:g} s is needed")
    cycles = where.count(data, "cycles", prefix, 1)
    if down <= 0:
        where.fail(f"{prefix}down", "must be more than 0 s")
    if (end - start) / (cycles * banks) < 2 * down:
        where.fail(
            f"{prefix}down",
            f"{cycles} cycles of {banks} banks in {end - start:g} s leave less than twice "
            f"{down:g} s per cycle (one node is down at a time)",
        )
    return PowerCycles(
        cycles=cycles,
        down=down,
        start=start,
        end=end,
        recovery=where.duration(data, "recovery", prefix, required=False),
    )


def resolve(command: str, proposer: str, banks: list[str]) -> str:
    """``command`` with its placeholders filled in: ``{proposer}`` by ``proposer``, then
    ``{rest}`` by every bank the command does not name."""
    command = command.replace(PROPOSER, proposer)
    if REST not in command:
        return command
    named = set(re.split(r"[\s,/>-]+", command))
    return command.replace(REST, ",".join(b for b in banks if b not in named))
