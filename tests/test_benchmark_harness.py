"""The benchmark harness (benchmarks/run.py) gives figures that hold up (issue 16, section 6):
it counts the CPU of every thread and child process of a server, reads every error the load
generators report, and marks a run invalid when a server had errors, stopped early at a cap, or
did not write the access log it was said to have on."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from twisted.trial import unittest

HARNESS = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


def _load_harness():
    spec = importlib.util.spec_from_file_location("benchmark_harness", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


run = _load_harness()

WRK = """Running 2s test @ http://127.0.0.1:8000/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    1.02ms  20.00ms   90.00%
    Req/Sec    24.00k     1.00k   26.00k    80.00%
  Latency Distribution
     50%    1.90ms
     75%    2.20ms
     90%    2.80ms
     99%    5.86ms
  47856 requests in 2.00s, 5.20MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 10
Requests/sec:  23928.00
Transfer/sec:      2.60MB
"""

H2LOAD = """finished in 3.00s, 3328.67 req/s, 143.92KB/s
requests: 9998 total, 10086 started, 9998 done, 9986 succeeded, 12 failed, 12 errored, 0 timeout
status codes: 9986 2xx, 0 3xx, 4 4xx, 0 5xx
traffic: 431.77KB (442129) total, 39.86KB (40814) headers (space savings 95.08%), 126.78KB (129818) data
                     min         max         mean         sd        +/- sd
time for request:     6.62ms     91.39ms     22.85ms     11.85ms    86.81%
"""


def _row(**fields):
    return {"server": "x", "rate": 1000.0, "requests": 5000, "errors": 0, "client_cpu": 0.3,
            "server_cpu": 0.95, "output": {"lines": 3}, **fields}


class LoadGeneratorReports(unittest.TestCase):
    def test_wrk_errors_are_non_2xx_and_socket_errors(self) -> None:
        row = run.parse_wrk(WRK)
        self.assertEqual(row["errors"], 10 + 3 + 2)
        self.assertEqual(row["requests"], 47856 - 10)
        self.assertEqual(row["rate"], 23928.0)
        self.assertAlmostEqual(row["latency_ms"], 5.86)

    def test_h2load_errors_are_failed_errored_timed_out_and_non_2xx(self) -> None:
        row = run.parse_h2load(H2LOAD, 10)
        self.assertEqual(row["errors"], 12 + 12 + 0 + 4)
        self.assertEqual(row["requests"], 9986)
        self.assertAlmostEqual(row["per_connection"], 999.8)
        self.assertAlmostEqual(row["latency_ms"], 22.85)


class Validity(unittest.TestCase):
    def test_a_clean_row_is_valid(self) -> None:
        self.assertEqual(run.judge(_row()), ([], []))

    def test_errors_make_a_row_invalid(self) -> None:
        problems, _ = run.judge(_row(errors=3))
        self.assertEqual(problems, ["3 errors"])

    def test_a_failed_server_is_invalid(self) -> None:
        problems, _ = run.judge({"server": "x", "failed": "RuntimeError: exited with 3"})
        self.assertEqual(problems, ["failed: RuntimeError: exited with 3"])

    def test_a_load_that_stopped_early_is_invalid(self) -> None:
        problems, _ = run.judge(_row(stopped_early="the load stopped early: ..."))
        self.assertEqual(problems, ["the load stopped early: ..."])

    def test_a_round_number_per_connection_is_a_cap_with_errors_and_a_note_alone(self) -> None:
        problems, _ = run.judge(_row(per_connection=1000.3, errors=8))
        self.assertIn("about 1000: a per-connection cap?", problems[-1])
        problems, notes = run.judge(_row(per_connection=1000.3))
        self.assertEqual(problems, [])
        self.assertIn("about 1000", notes[0])

    def test_an_access_log_said_on_must_write_a_line_per_request(self) -> None:
        problems, _ = run.judge(_row(access_log=True, output={"lines": 12}))
        self.assertEqual(problems, ["access log said to be on, but 12 lines of output for 5000 requests"])
        self.assertEqual(run.judge(_row(access_log=True, output={"lines": 5003})), ([], []))

    def test_a_saturated_client_is_noted(self) -> None:
        problems, notes = run.judge(_row(client_cpu=0.97))
        self.assertEqual(problems, [])
        self.assertEqual(notes, ["client-bound (load generator at 97% of its core)"])


class Rounds(unittest.TestCase):
    def test_ratios_are_taken_within_each_round_and_invalid_rounds_left_out(self) -> None:
        scenario = run.SCENARIOS["http1"]

        def row(server, rate, problems=()):
            return {"server": server, "rate": rate, "cpu_us": 1e6 / rate, "requests": 1, "errors": 0,
                    "problems": list(problems), "notes": []}

        rounds = [[row("hello-asgi", 200.0), row("uvicorn", 100.0)],
                  [row("hello-asgi", 100.0), row("uvicorn", 100.0)],
                  [row("hello-asgi", 900.0), row("uvicorn", 10.0, ["3 errors"])]]
        summary = {entry["server"]: entry for entry in run.summarise(rounds, scenario)}
        self.assertEqual(summary["uvicorn"]["advantage_rate_per_round"], [2.0, 1.0, None])
        self.assertEqual(summary["uvicorn"]["advantage_rate"], 1.5)
        self.assertEqual(summary["uvicorn"]["rate"], 100.0)  # the median of the valid rounds
        self.assertEqual(summary["hello-asgi"]["rate"], 200.0)
        self.assertEqual(summary["uvicorn"]["problems"], ["round 3: 3 errors"])
        target, on_uvloop = run.targets(rounds, scenario)
        self.assertEqual(target["per_round"], [2.0, 1.0, None])
        self.assertTrue(target["met"])
        self.assertEqual(on_uvloop["per_round"], [None, None, None])  # no hello-asgi-uvloop row here
        self.assertFalse(on_uvloop["met"])



class StoppedEarly(unittest.TestCase):
    def _sampler(self, connections, waiting=lambda t: 0.0):
        sampler = run.Sampler(-1, 8000)
        # busy for 1 s, then idle for 1 s
        sampler.samples = [(t * 0.25, min(t, 4) * 0.25, waiting(t), connections(t)) for t in range(9)]
        return sampler

    def test_connections_that_closed_and_stayed_closed(self) -> None:
        why = self._sampler(lambda t: 10 if t < 3 else 0).stopped_early()
        self.assertEqual(why, "the load stopped early: 10 connections open in the first half of the run, at most 0 "
                              "in the second")

    def test_a_server_asleep_in_the_second_half_with_its_connections_open(self) -> None:
        """Hypercorn's GOAWAY after 1000 requests leaves h2load's connections open, and idle."""
        why = self._sampler(lambda t: 10).stopped_early()
        self.assertEqual(why, "the load stopped early: server busy 100% in the first half of the run, 0% in the "
                              "second, and not waiting for its core (0%)")

    def test_a_server_starved_of_its_core_did_not_stop(self) -> None:
        starved = self._sampler(lambda t: 10, waiting=lambda t: max(0, t - 4) * 0.25)  # runnable, not running
        self.assertIsNone(starved.stopped_early())

    def test_connections_are_counted_at_the_servers_end(self) -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            sampler = run.Sampler(-1, listener.getsockname()[1])
            self.assertEqual(sampler._connections(), 0)
            with socket.create_connection(listener.getsockname()):
                accepted, _ = listener.accept()
                with accepted:
                    self.assertEqual(sampler._connections(), 1)


BURNER = textwrap.dedent("""
    import os, sys, threading, time

    def burn(seconds):
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass

    def burn_thread():
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass

    thread = threading.Thread(target=burn_thread)
    thread.start()
    thread.join()
    child = os.fork()
    if child == 0:
        burn(0.3)
        os._exit(0)
    os.waitpid(child, 0)
    print("done", flush=True)
    sys.stdin.read()
""")


class ServerCPU(unittest.TestCase):
    def test_every_thread_and_reaped_child_of_the_session_is_counted(self) -> None:
        """0.3 s in an exited thread and 0.3 s in a child that exited and was reaped: the
        process's own utime would show only the first."""
        process = subprocess.Popen([sys.executable, "-c", BURNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   start_new_session=True, text=True)
        self.addCleanup(process.wait)
        self.addCleanup(process.stdin.close)
        self.assertEqual(process.stdout.readline(), "done\n")
        self.assertGreaterEqual(run.cpu_seconds(process.pid), 0.58)


class Servers(unittest.TestCase):
    def test_every_peer_is_started_as_shipped_with_its_access_log_as_asked(self) -> None:
        def command(name, **launch):
            server = next(s for s in run.SERVERS if s.name == name)
            return server.command(run.Launch(8000, **launch))

        self.assertNotIn("--no-access-log", command("hello-asgi", access_log=True))
        self.assertIn("--no-access-log", command("hello-asgi"))
        self.assertIn("--no-access-log", command("hello-asgi-nolog", access_log=True))
        self.assertEqual(command("uvicorn", access_log=True)[1:], ["app:app", "--host", "127.0.0.1", "--port", "8000"])
        self.assertIn("--access-log", command("granian", access_log=True))
        self.assertIn("-v", command("daphne"))
        self.assertNotIn("-v", command("daphne", access_log=True))
        hypercorn = command("hypercorn", access_log=True)
        self.assertEqual(hypercorn[1:3], ["--config", str(run.HYPERCORN_CONFIG)])
        self.assertIn("--access-logfile", hypercorn)
        self.assertIn("keep_alive_max_requests = 1000000000", run.HYPERCORN_TOML)

    def test_the_defaults_scenario_adds_hello_asgi_without_its_log(self) -> None:
        rows = [case.row for case in run.cases(run.SCENARIOS["defaults"], True, None)]
        self.assertEqual(rows, ["hello-asgi", "hello-asgi-nolog", "hello-asgi-uvloop", "uvicorn", "hypercorn", "daphne", "granian"])
        rows = [case.row for case in run.cases(run.SCENARIOS["http1"], False, None)]
        self.assertNotIn("hello-asgi-nolog", rows)
        rows = [case.row for case in run.cases(run.SCENARIOS["download"], False, None)]
        self.assertIn("hello-asgi h2c", rows)
        self.assertNotIn("uvicorn h2c", rows)
        self.assertNotIn("bare-h2 (ceiling) h2c", rows)
