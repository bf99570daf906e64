"""`depnet bench ledger`: a small run reports figures that add up."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli.commands.bench import bench


def test_bench_ledger_json_reports_consistent_figures() -> None:
    args = ["ledger", "--txs", "250", "--accounts", "40", "--block-size", "100", "--json"]
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert (figures["txs"], figures["blocks"], figures["block_size"]) == (250, 3, 100)
    assert figures["tx_per_s"] > 0 and figures["store_mb"] > 0
    assert figures["verify_per_s"] > figures["tx_per_s"]  # verifying is one part of the path
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
