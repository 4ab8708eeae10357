"""``python -m benchmarks.sync`` on tiny backlogs, with the real parts (mosquitto, worker
processes, SQLite files, PostgreSQL): every key of the e2e runs and of the drain mode is
printed, and the drain mode's ledger holds exactly the records published, checked against
the journals; a broker that drops messages fails the run (no timing is asserted)."""

from __future__ import annotations

import re

import pytest

from benchmarks import sync
from terminal import broker as broker_mod

TINY = ["--cards", "100", "--batch-records", "200", "--backlog", "0"]


def _keys(out: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in out.splitlines())


def test_the_e2e_runs_print_their_keys(capsys, tmp_path):
    """One worker on each ledger, 1,000 records: the keys the issue names are there."""
    sync.main(["--records", "1000", "--sqlite-workers", "1", "--pg-workers", "1", "--dir", str(tmp_path), *TINY])
    out = _keys(capsys.readouterr().out)
    assert out["records"] == "1000"
    for key in ("e2e_records_per_s_sqlite", "e2e_records_per_s_postgres", "e2e_records_per_s_sqlite_1w",
                "e2e_records_per_s_postgres_1w"):
        assert int(out[key]) > 0, key
    for key in ("cpu_us_per_record_edge", "cpu_us_per_record_workers", "cpu_us_per_record_db"):
        assert float(out[key]) > 0, key
    assert out["e2e_batches_postgres_1w"].startswith("5 (resends")  # 200 records a batch
    assert not any(k.startswith("drain_") for k in out)  # the drain mode is off by default


def test_the_drain_mode_prints_its_keys_and_holds_every_record(capsys, tmp_path):
    """1 and 2 sites, 1 and 2 workers, both ledgers: each run's ledger holds exactly the
    1,200 records published and matches the journals; the workers' split adds up."""
    sync.main(["--records", "1200", "--sqlite-workers", "", "--pg-workers", "", "--drain-sites", "1,2",
               "--drain-workers", "1,2", "--dir", str(tmp_path), *TINY])
    out = _keys(capsys.readouterr().out)
    assert not any(k.startswith("e2e_") for k in out)
    for ledger in ("sqlite", "postgres"):
        for sites, sfx in ((1, "1site"), (2, "2sites")):
            for w in (1, 2):
                name = f"{ledger}_{w}w_{sfx}"
                assert int(out[f"drain_records_per_s_{name}"]) > 0
                assert float(out[f"drain_s_{name}"]) > 0
                assert out[f"drain_checked_{name}"] == (
                    f"reconciliation: {sites} site(s), 1200 journal records, 1200 in the host ledger: match: OK")
                assert out[f"drain_published_{name}"].startswith("6 (resends 0")  # 200 records a batch
                # the sites share the 100 cards; their counters rise with time across the sites
                # (benchmarks.sync.card_counter), as real traffic's do: no clone alert
                assert out[f"drain_clone_alerts_{name}"] == "none"
                split = out[f"drain_worker_split_{name}"]
                counts = [int(x) for x in re.findall(r"w\d (\d+) batches / \d+ records", split)]
                records = [int(x) for x in re.findall(r"w\d \d+ batches / (\d+) records", split)]
                assert len(counts) == w and sum(counts) == 6 and sum(records) == 1200, split
                assert "workers" in out[f"drain_cpu_s_{name}"] and "mosquitto" in out[f"drain_cpu_s_{name}"]
                if ledger == "postgres":
                    assert "waiting on a lock" in out[f"drain_pg_backends_{name}"]
                    assert "postgres" in out[f"drain_cpu_us_per_record_{name}"]
            assert float(out[f"drain_2w_over_1w_{ledger}_{sfx}"]) > 0
            assert "records/s" in out[f"drain_cores_allow_{ledger}_2w_{sfx}"]


def test_drain_rounds_alternate_and_report_the_median(capsys, tmp_path):
    """``--drain-rounds 3``: each worker count three times; the figure is the median round's,
    the ratio the medians', and every round is listed."""
    sync.main(["--records", "600", "--sqlite-workers", "", "--pg-workers", "", "--drain-sites", "1",
               "--drain-workers", "1,2", "--drain-db", "sqlite", "--drain-rounds", "3", "--dir", str(tmp_path), *TINY])
    out = _keys(capsys.readouterr().out)
    per_w = {}
    for w in (1, 2):
        rounds = [int(x) for x in out[f"drain_records_per_s_sqlite_{w}w_1site_rounds"].split(", ")]
        assert len(rounds) == 3
        assert int(out[f"drain_records_per_s_sqlite_{w}w_1site"]) == sorted(rounds)[1]
        per_w[w] = rounds
    assert len(out["drain_2w_over_1w_sqlite_1site_rounds"].split(", ")) == 3
    assert float(out["drain_2w_over_1w_sqlite_1site"]) == round(sorted(per_w[2])[1] / sorted(per_w[1])[1], 2)


def test_a_broker_that_drops_queued_messages_fails_the_drain(monkeypatch, tmp_path):
    """Mosquitto with a queue of 2 messages a client (its default of 1000 is the same
    trap at scale): with the worker stopped, most of the 30 batches are dropped, and the run
    stops with the count instead of printing a figure."""
    conf = broker_mod.mosquitto_conf

    def small_queue(settings):
        text = conf(settings)
        assert "max_queued_messages 0\n" in text
        return text.replace("max_queued_messages 0\n", "max_queued_messages 2\n")

    monkeypatch.setattr(broker_mod, "mosquitto_conf", small_queue)
    with pytest.raises(sync.DrainError, match=r"6000 records published in 30 batches, the ledger holds (\d+)") as e:
        sync.main(["--records", "6000", "--sqlite-workers", "", "--pg-workers", "", "--drain-sites", "1",
                   "--drain-workers", "1", "--drain-db", "sqlite", "--ack-timeout", "3", "--dir", str(tmp_path),
                   *TINY])
    held = int(re.search(r"the ledger holds (\d+)", str(e.value))[1])  # type: ignore[index]
    assert held < 6000


def test_bad_drain_counts_are_refused(capsys):
    with pytest.raises(SystemExit):
        sync.main(["--drain-sites", "0"])
    assert "--drain-sites" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sync.main(["--drain-sites", "1", "--drain-workers", "two"])
    assert "--drain-workers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sync.main(["--drain-sites", "1", "--drain-rounds", "0"])
    assert "--drain-rounds" in capsys.readouterr().err
