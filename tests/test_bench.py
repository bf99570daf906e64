"""`depnet bench ledger | network`: small runs report figures that add up; the network
bench's closed loop loses nothing; sweeps plot their curve."""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.commands.bench import bench
from cli.devnet.bench import NetworkLoad, bench_template, run_network_bench
from cli.devnet.client import _retry_after


def test_bench_ledger_json_reports_consistent_figures() -> None:
    args = ["ledger", "--txs", "250", "--accounts", "40", "--block-size", "100", "--json"]
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert (figures["txs"], figures["blocks"], figures["block_size"]) == (250, 3, 100)
    assert figures["tx_per_s"] > 0 and figures["store_mb"] > 0
    assert figures["verify_per_s"] > figures["tx_per_s"]  # verifying is one part of the path
    # the reference, measured alongside on the same txs: the C call alone
    assert figures["raw_verify_per_s"] > figures["tx_per_s"]
    ratio = figures["tx_per_s"] / figures["raw_verify_per_s"]
    assert abs(figures["ratio_to_raw_verify"] - ratio) < 0.02
    phases = figures["phase_seconds"]
    assert set(phases) == {"decode", "verify", "apply", "commit"}
    assert abs(sum(phases.values()) - figures["seconds"]) < 0.01
    assert abs(figures["tx_per_s"] - 250 / figures["seconds"]) / figures["tx_per_s"] < 0.05


def test_bench_ledger_prints_a_table_for_people() -> None:
    result = CliRunner().invoke(bench, ["ledger", "--txs", "20", "--accounts", "5"])
    assert result.exit_code == 0, result.output
    assert "tx/s" in result.output and "verify" in result.output


def test_bench_is_a_depnet_command() -> None:
    from cli.main import main

    assert main.get_command(None, "bench") is bench  # type: ignore[arg-type]


def test_bench_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import cli.devnet.bench

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no ports left")

    monkeypatch.setattr(cli.devnet.bench, "run_ledger_bench", broken)
    monkeypatch.delenv("DEPNET_DEBUG", raising=False)
    result = CliRunner().invoke(bench, ["ledger", "--txs", "5"])
    assert result.exit_code == 1 and result.exc_info[0] is SystemExit
    assert result.stderr.strip() == (
        "error: unexpected RuntimeError: no ports left (DEPNET_DEBUG=1 shows a traceback)"
    )


def test_sweep_needs_rates_and_plot_needs_sweep() -> None:
    runner = CliRunner()
    result = runner.invoke(bench, ["network", "--sweep", "500,x"])
    assert result.exit_code == 2 and "comma-separated list of integers" in result.output
    result = runner.invoke(bench, ["network", "--sweep", "500,-1"])
    assert result.exit_code == 2
    result = runner.invoke(bench, ["network", "--plot", "curve.png"])
    assert result.exit_code == 2 and "--sweep" in result.output


def test_sweep_runs_one_network_per_rate_and_plots_the_curve(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import cli.devnet.bench

    offered: list[int] = []

    def fake_run(load: NetworkLoad, home: Path | None, progress: object) -> dict:
        offered.append(load.rate)
        committed = min(load.rate or 2_500, 2_500)
        return {
            "offered_tx_per_s": load.rate or None,
            "committed_tx_per_s": committed,
            "latency_ms": {"p50": 100.0 + committed / 10, "p99": 300.0 + committed / 5},
            "lost_txs": 0,
            "refused_429": 0 if load.rate < 2_500 else 7,
        }

    monkeypatch.setattr(cli.devnet.bench, "run_network_bench", fake_run)
    plot, out = tmp_path / "curve.png", tmp_path / "sweep.json"
    args = ["network", "--sweep", "500,1000,4000,0", "--plot", str(plot), "--out", str(out)]
    result = CliRunner().invoke(bench, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert offered == [500, 1_000, 4_000, 0]
    sweep = json.loads(result.output)
    assert json.loads(out.read_text()) == sweep
    assert [p["committed_tx_per_s"] for p in sweep["points"]] == [500, 1_000, 2_500, 2_500]
    assert plot.read_bytes().startswith(b"\x89PNG") and plot.stat().st_size < 200_000


def test_bench_template_grows_to_seven_banks() -> None:
    from chain.genesis import genesis_from_template

    template = bench_template(7, accounts_per_bank=2)
    genesis = genesis_from_template(
        template,
        lambda role, name: sha256(f"{role}/{name}".encode()).digest(),
        genesis_time_ms=1_000,
    )
    assert [b.name for b in genesis.banks][4:] == ["B5", "B6", "B7"]
    assert sum(a.name.startswith("load-b7-") for a in genesis.accounts) == 2


@pytest.mark.network
def test_closed_loop_bench_loses_nothing_and_heads_agree(tmp_path: Path) -> None:
    """10 s of the closed loop on 4 local validators: correctness only, never speed."""
    load = NetworkLoad(
        duration=10, rate=0, batch=100, accounts=200, banks=4, seed=3, in_flight=400, warmup=2
    )
    result = run_network_bench(load, tmp_path / "net")
    assert result["submitted_accepted"] > 0 and result["committed_in_load_window"] > 0
    assert result["lost_txs"] == 0 and result["uncommitted_after_drain"] == 0
    assert result["committed_of_accepted"] == result["submitted_accepted"]
    assert result["head_hashes_agree"] and result["post_errors"] == 0
    assert result["mode"] == "closed_loop" and result["cpu_cores_client"] >= 0
    assert result["batch"] == 50  # one tx per account per POST: 200 accounts over 4 banks
    stages = result["height_stage_ms"]["JPM"]
    assert set(stages) >= {"proposal", "executed", "committed"}


def test_a_client_reads_the_finer_retry_hint_before_http_s_whole_seconds() -> None:
    class Answer:
        def __init__(self, **headers: str) -> None:
            self.headers = headers

        def getheader(self, name: str) -> str | None:
            return self.headers.get(name)

    assert _retry_after(Answer(**{"Retry-After": "1", "Retry-After-Ms": "250"})) == 0.25
    assert _retry_after(Answer(**{"Retry-After": "2"})) == 2.0
    assert _retry_after(Answer(**{"Retry-After": "Fri, 31 Dec 1999 23:59:59 GMT"})) is None
    assert _retry_after(Answer()) is None
