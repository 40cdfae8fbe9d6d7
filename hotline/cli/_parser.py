"""The command line's grammar: arguments, help texts, examples and the exit-status table."""

from __future__ import annotations

import argparse

from .._errors import HotlineError
from ._commands import cmd_check_evidence, cmd_demo, cmd_evidence, cmd_log, cmd_verify
from ._conformance import cmd_conformance
from ._keys import cmd_fingerprint, cmd_keygen
from ._launch import cmd_run
from ._output import package_version
from ._status_cmd import cmd_status

__all__ = ["build_parser"]


def _path_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= count <= 8:
        raise argparse.ArgumentTypeError(f"from 1 to 8, not {count}")
    return count


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    from .._config import Config

    try:
        Config(heartbeat_interval=value)  # The library's range, so the two cannot disagree.
    except HotlineError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("heartbeat_interval ")) from None
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
    return value


_RUN_EXAMPLES = """\
examples:
  listen for the peer and talk, one message per line typed:
    hotline run --key bob --peer alice.pub --data bob-data --listen 0.0.0.0:7400

  send one message and wait up to a minute for the peer to hold it:
    echo "Convoy moving north." | timeout 60 hotline run --key alice --peer bob.pub \\
        --data alice-data --connect 192.0.2.20:7400 --until-delivered --json

  receive only, one JSON object per event:
    hotline run --key bob --peer alice.pub --data bob-data --listen 0.0.0.0:7400 \\
        --json </dev/null

exit status: 0 stopped by SIGINT/SIGTERM, or --until-delivered done; 1 error;
  2 usage; 3 a line was not sent; 4 --until-delivered interrupted before every
  message was delivered (see docs/cli.md)
"""

_EXIT_STATUSES = """\
exit status (every command):
  0  success (run: stopped by SIGINT or SIGTERM, or --until-delivered done)
  1  an error, reported in one line on standard error
  2  a usage error
  3  run: a line read from standard input was not sent
  4  interrupted by SIGINT or SIGTERM before the command's work was done
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hotline",
        description="A secure line between two parties: signed, encrypted, sequenced "
        "messages with receipts and heartbeats, and no server in the middle.",
        epilog=_EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hotline {package_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging on standard error (-vv for debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen = commands.add_parser("keygen", help="make a key pair (OpenSSH format)",
                                 description="Make an Ed25519 key pair in OpenSSH format and "
                                 "print its fingerprint.")
    keygen.add_argument("file", metavar="FILE",
                        help="private key file (mode 0600); the public key goes to FILE.pub")
    keygen.add_argument("--comment", default="", metavar="TEXT",
                        help="comment at the end of FILE.pub")
    keygen.add_argument("--passphrase-file", metavar="F",
                        help="encrypt the private key with the passphrase in file F "
                        "(mode 0600)")
    keygen.add_argument("--force", action="store_true", help="overwrite existing files")
    keygen.set_defaults(handler=cmd_keygen)

    fingerprint = commands.add_parser("fingerprint", help="print a key's SHA256 fingerprint",
                                      description="Print the SHA256 fingerprint of a key, as "
                                      "ssh-keygen -lf does.")
    fingerprint.add_argument("file", metavar="FILE",
                             help="a private or public key file; - reads the key from "
                             "standard input")
    fingerprint.add_argument("--passphrase-file", metavar="F",
                             help="the passphrase of an encrypted private key (without it, "
                             "it is asked for when standard input is a terminal)")
    fingerprint.set_defaults(handler=cmd_fingerprint)

    run = commands.add_parser(
        "run", help="run one end of a line",
        description="Run this node's end of the line until it is stopped: each line of "
        "standard input is sent as a message; messages, receipts and the peer's liveness "
        "are printed on standard output.",
        epilog=_RUN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--key", metavar="FILE",
                     help="this node's private key (asked for its passphrase when it is "
                     "encrypted, standard input is a terminal and --passphrase-file is not "
                     "given)")
    run.add_argument("--peer", metavar="PUBFILE",
                     help="the peer's public key file, or the 'ssh-ed25519 AAAA...' text")
    run.add_argument("--data", metavar="DIR",
                     help="the line's data directory (created if absent)")
    run.add_argument("--listen", type=_address, metavar="HOST:PORT", action="append",
                     help="accept the peer's calls on this address (0.0.0.0:PORT for every "
                     "IPv4 interface, [::]:PORT for IPv6); given more than once, each "
                     "address is a path of its own")
    run.add_argument("--connect", type=_address, metavar="HOST:PORT", action="append",
                     help="call the peer at this address, and again whenever the "
                     "connection ends; given more than once, each address is a path of its "
                     "own (the line survives the loss of any path while another is up)")
    run.add_argument("--json", action="store_true", help="one JSON event per line on stdout")
    run.add_argument("--paths", type=_path_count, metavar="N",
                     help="keep up to N paths to the peer at once (default: 1, or 8 when "
                     "--listen or --connect is given more than once); a side listening on "
                     "one port for a peer that dials several paths needs it")
    run.add_argument("--heartbeat", type=_positive, metavar="SECONDS",
                     help="heartbeat interval (default 1)")
    run.add_argument("--ack-within", type=_seconds, metavar="SECONDS",
                     help="report an 'overdue' event for each message not acknowledged "
                     "within SECONDS of sending")
    run.add_argument("--until-delivered", action="store_true",
                     help="exit once standard input is done and every message is delivered")
    run.add_argument("--passphrase-file", metavar="F",
                     help="the passphrase of an encrypted --key (file mode 0600)")
    run.add_argument("--durability", choices=("FULL", "NORMAL"),
                     help="FULL (default): a receipted message survives power loss; NORMAL: "
                     "it survives a crash of the process")
    run.add_argument("--metrics", type=_address, metavar="HOST:PORT",
                     help="serve the live state in the Prometheus text format at "
                     "http://HOST:PORT/metrics (no authentication: use a loopback address)")
    # The configuration file (docs/cli.md, "Configuration file"): --key, --peer and --data
    # may come from it, so cmd_run checks that they are given once the file is read, and
    # reports what is wrong in the file as a usage error through this parser.
    run.add_argument("--config", metavar="FILE",
                     help="read the settings, and the peers of a node serving several, from "
                     "this TOML file; a flag given overrides the file")
    run.set_defaults(handler=cmd_run, usage_error=run.error)

    log = commands.add_parser("log", help="print the transcript held in a store",
                              description="Print every signed message and receipt held in "
                              "DIR/hotline.db, in both directions.")
    log.add_argument("dir", metavar="DIR", help="the data directory given to run --data")
    log.add_argument("--json", action="store_true",
                     help="one JSON object per record, and no header line")
    log.set_defaults(handler=cmd_log)

    verify = commands.add_parser("verify", help="verify a store's transcript offline",
                                 description="Check every signature, both hash chains and "
                                 "every receipt of the transcript in DIR/hotline.db.")
    verify.add_argument("dir", metavar="DIR", help="the data directory given to run --data")
    verify.set_defaults(handler=cmd_verify)

    status = commands.add_parser(
        "status", help="a line's state, from its store and from the running node",
        description="Show each line of DIR (DIR/hotline.db, DIR/peers/*/hotline.db): "
        "sequence numbers, outbox, the last receipts each way with their signed times, "
        "and, while a node runs there, its live state (peer liveness, RTT, last handshake, "
        "messages and bytes each way) from its control socket DIR/hotline.sock.",
    )
    status.add_argument("dir", metavar="DIR", help="the data directory given to run --data")
    status.add_argument("--json", action="store_true", help="one JSON document")
    status.set_defaults(handler=cmd_status)

    # --- evidence for disputes: export and check (docs/evidence.md) ---
    evidence = commands.add_parser(
        "evidence", help="export the signed evidence of one message and its receipts",
        description="Write to standard output one JSON document proving message SEQ (sent "
        "by this node, or received with --received) and the first delivered and acknowledged "
        "receipts that cover it. Refuses a store that 'hotline verify' rejects.")
    evidence.add_argument("dir", metavar="DIR", help="the data directory given to run --data")
    evidence.add_argument("seq", metavar="SEQ", help="a message number, or a range SEQ..SEQ")
    evidence.add_argument("--received", action="store_true",
                          help="a message this node received (default: one it sent)")
    evidence.set_defaults(handler=cmd_evidence)
    check = commands.add_parser(
        "check-evidence", help="check an evidence document offline with two trusted keys",
        description="Check FILE (- for standard input) made by 'hotline evidence' against "
        "the two public keys you trust, and say who sent what and when, when the receiver "
        "held and acknowledged it, and what the evidence cannot prove. Exit status 0 when "
        "valid, 1 otherwise.")
    check.add_argument("file", metavar="FILE", help="the evidence document")
    check.add_argument("--key", action="append", metavar="PUB",
                       help="a trusted public key file or 'ssh-ed25519 AAAA...' text; give two")
    check.add_argument("--ack-within", type=_seconds, metavar="SECONDS",
                       help="also say whether each message was acknowledged within SECONDS "
                       "of sending, by the two signed clocks")
    check.add_argument("--json", action="store_true", help="one JSON object")
    check.set_defaults(handler=cmd_check_evidence)

    demo = commands.add_parser("demo", help="two nodes on loopback: a first look",
                               description="Run two nodes, alice and bob, in one process "
                               "over loopback TCP, with fresh keys and temporary stores.")
    demo.add_argument("--json", action="store_true", help="one JSON object per line")
    demo.set_defaults(handler=cmd_demo)

    # --- the conformance suite (docs/cli.md, docs/testing.md) ---
    conformance = commands.add_parser(
        "conformance", help="test an implementation of the protocol over TCP",
        description="Play an honest peer and then hostile ones against an implementation of "
        "the hotline protocol that trusts KEY, and print one line per case: PASS, FAIL or "
        "SKIP, the section of docs/protocol.md it checks, and what it checks. Exit status 0 "
        "when no case failed.")
    conformance.add_argument("--key", required=True, metavar="FILE",
                             help="the suite's own private key, which the implementation "
                             "trusts")
    conformance.add_argument("--peer", required=True, metavar="PUBFILE",
                             help="the implementation's public key file, or the "
                             "'ssh-ed25519 AAAA...' text")
    role = conformance.add_mutually_exclusive_group(required=True)
    role.add_argument("--connect", type=_address, metavar="HOST:PORT",
                      help="dial the implementation, which listens here")
    role.add_argument("--listen", type=_address, metavar="HOST:PORT",
                      help="listen here for the implementation's calls")
    conformance.add_argument("--case", action="append", metavar="NAME",
                             help="run only this case (repeatable); names as in --json")
    conformance.add_argument("--passphrase-file", metavar="F",
                             help="the passphrase of an encrypted --key (mode 0600)")
    conformance.add_argument("--json", action="store_true",
                             help="one JSON object per case, then a summary object")
    conformance.set_defaults(handler=cmd_conformance)
    return parser
