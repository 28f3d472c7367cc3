#!/usr/bin/env python3
"""Reference Casparian worker on real libzmq (pyzmq), protocol v4.

It speaks the wire protocol of docs/PROTOCOL.md exactly as the original Python
worker did, so the Go Sentinel can be tested against an independent ZeroMQ
implementation:

    worker.py --endpoint tcp://127.0.0.1:5555 --capabilities line_count,byte_count --jobs 20

Every message is two frames: a 16-byte big-endian header (struct "!BBHQI":
version 4, opcode, reserved 0, job_id, payload length) and a JSON payload.

The worker identifies, then runs each DISPATCH for real (opens file_path and
counts its lines and bytes), answers it with a CONCLUDE and prints one line
per job to stdout:

    done <job_id> <plugin> <file_path> rows=<n>

It exits 0 after concluding --jobs jobs and non-zero, with a message on
stderr, on timeout or when the Sentinel breaks the protocol.

--no-heartbeat, --job-seconds and --env-fail make it behave like the
original Casparian workers (Python bridge, Rust legacy): they never send or
answer HEARTBEAT (logging "Unhandled OpCode: 4"), never identify again, run
the plugin inside the receive loop, and answer a failed PREPARE_ENV with an
ERR of job_id 0 that does not name the environment.

Only the standard library and zmq are used.
"""

import argparse
import json
import struct
import sys
import time

import zmq

VERSION = 4
HEADER = struct.Struct("!BBHQI")  # version, opcode, reserved, job_id, payload_len
assert HEADER.size == 16

# Opcodes (docs/PROTOCOL.md §3).
UNKNOWN, IDENTIFY, DISPATCH, ABORT, HEARTBEAT, CONCLUDE, ERR = range(7)
RELOAD, PREPARE_ENV, ENV_READY, DEPLOY, ACK = range(7, 12)
OPCODE_NAMES = {
    0: "UNKNOWN", 1: "IDENTIFY", 2: "DISPATCH", 3: "ABORT", 4: "HEARTBEAT",
    5: "CONCLUDE", 6: "ERR", 7: "RELOAD", 8: "PREPARE_ENV", 9: "ENV_READY",
    10: "DEPLOY", 11: "ACK",
}

UNKNOWN_WORKER = "unknown worker, send IDENTIFY"

# Fields every DISPATCH must carry (docs/PROTOCOL.md §4.2).
DISPATCH_FIELDS = ("plugin_name", "file_path", "sinks", "file_version_id",
                   "env_hash", "source_code")


class ProtocolError(Exception):
    """The Sentinel sent something protocol v4 does not allow."""


def log(msg):
    print("worker: " + msg, file=sys.stderr, flush=True)


def pack(opcode, job_id, payload):
    """Return the two frames of one message; payload is a dict or None."""
    body = b"" if payload is None else json.dumps(payload).encode("utf-8")
    return [HEADER.pack(VERSION, opcode, 0, job_id, len(body)), body]


def unpack(frames):
    """Validate one received message and return (opcode, job_id, payload)."""
    if len(frames) < 2:
        raise ProtocolError("want 2 frames, got %d" % len(frames))
    header, body = frames[0], frames[1]  # extra trailing frames are ignored
    if len(header) < HEADER.size:
        raise ProtocolError("header is %d bytes, want 16" % len(header))
    version, opcode, _reserved, job_id, length = HEADER.unpack(header[:HEADER.size])
    if version != VERSION:
        raise ProtocolError("version %d, want %d" % (version, VERSION))
    if opcode not in OPCODE_NAMES or opcode == UNKNOWN:
        raise ProtocolError("invalid opcode %d" % opcode)
    if length != len(body):
        raise ProtocolError("payload_len %d but payload frame is %d bytes" % (length, len(body)))
    payload = {}
    if body:
        try:
            payload = json.loads(body.decode("utf-8"))
        except ValueError as exc:
            raise ProtocolError("%s payload is not JSON: %s" % (OPCODE_NAMES[opcode], exc))
        if not isinstance(payload, dict):
            raise ProtocolError("%s payload is not a JSON object" % OPCODE_NAMES[opcode])
    return opcode, job_id, payload


def count_file(path):
    """The 'plugin': count the lines and bytes of the file at path."""
    lines = 0
    size = 0
    with open(path, "rb") as f:
        for line in f:
            lines += 1
            size += len(line)
    return lines, size


class Worker:
    def __init__(self, sock, identity, capabilities, no_heartbeat=False, job_seconds=0.0, env_fail=""):
        self.sock = sock
        self.identity = identity
        self.capabilities = capabilities
        self.no_heartbeat = no_heartbeat
        self.job_seconds = job_seconds
        self.env_fail = env_fail
        self.heartbeats_ignored = 0
        self.env_failures = 0
        self.done = 0
        self.identify_count = 0
        self.heartbeats_answered = 0
        self.concluded = set()

    def send(self, opcode, job_id=0, payload=None):
        self.sock.send_multipart(pack(opcode, job_id, payload))

    def identify(self):
        # No max_concurrent_jobs: like the original worker, the Sentinel must
        # assume one job at a time.
        self.identify_count += 1
        self.send(IDENTIFY, 0, {"capabilities": self.capabilities, "worker_id": self.identity})

    def heartbeat(self):
        self.send(HEARTBEAT, 0, {"status": "IDLE", "active_job_count": 0, "active_job_ids": []})

    def can_run(self, plugin):
        return "*" in self.capabilities or plugin in self.capabilities

    def on_dispatch(self, job_id, d):
        missing = [k for k in DISPATCH_FIELDS if k not in d or d[k] is None]
        if missing:
            raise ProtocolError("DISPATCH %d lacks %s" % (job_id, ", ".join(missing)))
        if job_id == 0:
            raise ProtocolError("DISPATCH with job_id 0")
        if job_id in self.concluded:
            # Legal (a requeued job may come back), but worth a note.
            log("job %d dispatched again" % job_id)
        plugin, path = d["plugin_name"], d["file_path"]
        if not self.can_run(plugin):
            raise ProtocolError("DISPATCH %d for plugin %r outside capabilities %s"
                                % (job_id, plugin, self.capabilities))
        sinks = {s.get("topic"): s for s in d["sinks"] if isinstance(s, dict)}
        if "output" not in sinks:
            raise ProtocolError("DISPATCH %d has no 'output' sink: %r" % (job_id, d["sinks"]))

        print("start %d" % job_id, flush=True)
        if self.job_seconds > 0:
            # Like the original Python worker: the plugin runs in this
            # thread, which does not call zmq meanwhile. Only libzmq's I/O
            # thread can answer the Sentinel (ZMTP PING) until it is done.
            time.sleep(self.job_seconds)
        try:
            rows, size = count_file(path)
        except OSError as exc:
            self.send(CONCLUDE, job_id, {"status": "FAILED", "metrics": {}, "artifacts": [],
                                         "error_message": "%s: %s" % (plugin, exc)})
            log("job %d failed: %s" % (job_id, exc))
        else:
            uri = sinks["output"].get("uri") or "memory://output"
            self.send(CONCLUDE, job_id, {
                "status": "SUCCESS",
                "metrics": {"rows": rows, "size_bytes": size},
                "artifacts": [{"topic": "output", "uri": "%s#job-%d" % (uri, job_id)}],
            })
            print("done %d %s %s rows=%d" % (job_id, plugin, path, rows), flush=True)
        self.concluded.add(job_id)
        self.done = len(self.concluded)

    def handle(self, opcode, job_id, payload):
        if opcode == DISPATCH:
            self.on_dispatch(job_id, payload)
        elif opcode == HEARTBEAT and self.no_heartbeat:
            self.heartbeats_ignored += 1
            if self.heartbeats_ignored == 1:
                log("Unhandled OpCode: 4")  # the originals log it for every HEARTBEAT; once will do
        elif opcode == HEARTBEAT:
            # Jobs run synchronously, so whenever we read a probe we are idle.
            self.heartbeat()
            self.heartbeats_answered += 1
        elif opcode == ERR:
            message = payload.get("message", "")
            if message == UNKNOWN_WORKER and not self.no_heartbeat:
                print("reidentify: " + message, flush=True)
                self.identify()
            else:
                log("ERR for job %d: %s" % (job_id, message))
        elif opcode == ABORT:
            # Nothing runs between messages; a late ABORT has nothing to stop.
            log("ABORT for job %d ignored (not running)" % job_id)
        elif opcode == RELOAD:
            log("RELOAD ignored")
        elif opcode == PREPARE_ENV and self.env_fail:
            # The originals' ERR names no environment and no job.
            self.env_failures += 1
            print("env-fail %s" % payload.get("env_hash", ""), flush=True)
            self.send(ERR, 0, {"message": self.env_fail})
        elif opcode == PREPARE_ENV:
            self.send(ENV_READY, 0, {"env_hash": payload.get("env_hash", ""),
                                     "interpreter_path": sys.executable, "cached": True})
        else:
            raise ProtocolError("unexpected %s from the Sentinel" % OPCODE_NAMES[opcode])


def parse_args(argv):
    p = argparse.ArgumentParser(description="Reference Casparian protocol v4 worker (pyzmq).")
    p.add_argument("--endpoint", required=True, help="Sentinel ROUTER endpoint, e.g. tcp://127.0.0.1:5555")
    p.add_argument("--capabilities", required=True, help="comma separated plugin names ('*' = any)")
    p.add_argument("--jobs", type=int, required=True, help="exit 0 after concluding this many jobs")
    p.add_argument("--identity", default="w-%d" % time.time_ns(), help="DEALER identity (default w-<ns>)")
    p.add_argument("--timeout", type=float, default=30.0, help="give up after this many seconds")
    p.add_argument("--zmq-heartbeat-ms", type=int, default=1000,
                   help="ZMQ_HEARTBEAT_IVL: how often libzmq sends a ZMTP PING (0 = never)")
    p.add_argument("--stay", type=float, default=0.0,
                   help="after the last job, keep serving (heartbeats) this many seconds")
    p.add_argument("--heartbeat-first", action="store_true",
                   help="send a HEARTBEAT before IDENTIFY and identify only when the Sentinel "
                        "answers ERR '%s'" % UNKNOWN_WORKER)
    p.add_argument("--curve-server-key", default="",
                   help="the Sentinel's CURVE public key (Z85); with --curve-secret-key, connect over CURVE")
    p.add_argument("--curve-secret-key", default="",
                   help="this worker's CURVE secret key (Z85); its public key is derived")
    p.add_argument("--no-heartbeat", action="store_true",
                   help="like the original workers: never send or answer HEARTBEAT and never identify "
                        "again (use with --zmq-heartbeat-ms 0, as the originals set no ZMQ_HEARTBEAT_IVL)")
    p.add_argument("--job-seconds", type=float, default=0.0,
                   help="sleep this long in each job, in the receive thread, without calling zmq")
    p.add_argument("--env-fail", default="", metavar="MESSAGE",
                   help="answer PREPARE_ENV with ERR job_id 0 and this message (no env_hash), "
                        "as the original workers do when an environment cannot be built")
    args = p.parse_args(argv)
    if bool(args.curve_server_key) != bool(args.curve_secret_key):
        p.error("--curve-server-key and --curve-secret-key go together")
    args.capabilities = [c.strip() for c in args.capabilities.split(",") if c.strip()]
    if not args.capabilities:
        p.error("--capabilities is empty")
    if args.jobs < 0:
        p.error("--jobs must not be negative")
    return args


def main(argv):
    args = parse_args(argv)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, args.identity.encode("ascii"))
    sock.setsockopt(zmq.LINGER, 2000)  # flush the last CONCLUDE before exiting
    # Let libzmq send ZMTP PING commands; the Sentinel must answer or ignore them.
    sock.setsockopt(zmq.HEARTBEAT_IVL, args.zmq_heartbeat_ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
    if args.curve_server_key:
        secret = args.curve_secret_key.encode("ascii")
        sock.curve_serverkey = args.curve_server_key.encode("ascii")
        sock.curve_secretkey = secret
        sock.curve_publickey = zmq.curve_public(secret)
    sock.connect(args.endpoint)

    w = Worker(sock, args.identity, args.capabilities,
               no_heartbeat=args.no_heartbeat, job_seconds=args.job_seconds, env_fail=args.env_fail)
    if args.heartbeat_first:
        w.heartbeat()
    else:
        w.identify()

    deadline = time.monotonic() + args.timeout
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    code = 0
    try:
        while w.done < args.jobs:
            left = deadline - time.monotonic()
            if left <= 0:
                log("timeout after %.1fs: concluded %d of %d jobs (identified %d times)"
                    % (args.timeout, w.done, args.jobs, w.identify_count))
                code = 2
                break
            if poller.poll(min(left, 0.5) * 1000):
                w.handle(*unpack(sock.recv_multipart()))
        if code == 0 and args.stay > 0:
            # Stay connected a little, so libzmq's PINGs and the Sentinel's
            # HEARTBEATs flow while no job does.
            until = time.monotonic() + args.stay
            while (left := until - time.monotonic()) > 0:
                if poller.poll(left * 1000):
                    w.handle(*unpack(sock.recv_multipart()))
    except ProtocolError as exc:
        log("protocol error: %s" % exc)
        code = 3
    finally:
        sock.close()
        ctx.term()
    print("summary jobs=%d identifies=%d heartbeats_answered=%d heartbeats_ignored=%d env_failures=%d"
          % (w.done, w.identify_count, w.heartbeats_answered, w.heartbeats_ignored, w.env_failures),
          flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
