"""Registry credentials on the builder: fetched just in time, handed to ctr through a terminal.

The one file of build_cache.sh's Python half that holds secrets, so what it may do with them is
seen in one place: a value from the AWS CLI stays in memory until it is written to a 0600 file
(user:password) in the script's work dir, and is typed into ctr's password prompt through a
pseudo-terminal; it never goes to argv, an environment, stdout or stderr (errors name the host
and the source). Stdlib only, Python 3.9 (the EKS AL2023 AMI's python3), like build_cache_helpers.py.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import tempfile
import termios
import time

# ctr 1.6 reads its password prompt with bufio ReadLine (4096-byte buffer) from a canonical-mode
# terminal (lines of at most 4095 bytes): a longer password would be cut silently.
MAX_PASSWORD_BYTES = 4095


class FetchError(Exception):
    """A credential could not be fetched or is unusable; the message never holds the value."""


def _aws(*args: str) -> str:
    """The AWS CLI's stdout (a secret: kept in memory); the last line of its error on failure."""
    proc = subprocess.run(["aws", *args], capture_output=True, text=True, env={**os.environ, "AWS_PAGER": ""})
    if proc.returncode != 0:
        raise FetchError((proc.stderr.strip().splitlines() or [f"aws exited {proc.returncode}"])[-1][-300:])
    return proc.stdout.rstrip("\n")


def user_password(source: str, region: str, reference: str) -> str:
    """`user:password` from the credential source (region "-": the CLI's default region)."""
    regional = [] if region == "-" else ["--region", region]
    if source == "ecr":  # user AWS, a 12-hour token for the caller's role in the registry's region
        return "AWS:" + _aws("ecr", "get-login-password", *regional)
    if source == "secretsmanager":
        text = _aws("secretsmanager", "get-secret-value", "--secret-id", reference, *regional,
                    "--query", "SecretString", "--output", "text")
        try:
            secret = json.loads(text)
            return f"{secret['username']}:{secret['password']}"
        except (ValueError, TypeError, KeyError):
            raise FetchError('its SecretString is not JSON {"username": ..., "password": ...}') from None
    if source == "ssm_secure_parameter":
        return _aws("ssm", "get-parameter", "--with-decryption", "--name", reference, *regional,
                    "--query", "Parameter.Value", "--output", "text")
    raise FetchError(f"unknown credential source {source!r}")


def check_typable(value: str) -> None:
    """ctr gets the user on argv and types-in the password: both must survive that way."""
    user, colon, password = value.partition(":")
    if not colon or not user:
        raise FetchError("it must hold user:password")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):  # a terminal acts on them (^C, ^U, newline...)
        raise FetchError("it holds a control character, which ctr's terminal prompt cannot take")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise FetchError(f"its password is longer than ctr's prompt reads ({MAX_PASSWORD_BYTES} bytes)")


def fetch_credential(host: str, source: str, region: str, reference: str, out_file: str, max_age: float) -> int:
    """`fetch HOST SOURCE REGION REFERENCE OUT_FILE [MAX_AGE_SECONDS]`: user:password into a 0600 file,
    replaced atomically (pulls may be reading it), unless one younger than MAX_AGE_SECONDS is there."""
    try:
        if time.time() - os.stat(out_file).st_mtime < max_age:
            return 0
    except FileNotFoundError:
        pass
    try:
        value = user_password(source, region, reference)
        check_typable(value)
    except FetchError as error:
        where = source if reference == "-" else f"{source} {reference}"
        print(f"cannot use the credentials for {host} from {where}: {error}", file=sys.stderr)
        return 1
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(out_file), prefix=os.path.basename(out_file) + ".")
    with os.fdopen(handle, "w", encoding="utf-8") as file:  # mkstemp: mode 0600
        file.write(value)
    os.replace(temporary, out_file)
    return 0


def pty_pull(secret_file: str, log_file: str, argv: list[str]) -> int:
    """`pty-pull SECRET_FILE LOG_FILE ctr-args... REF`: types the password ("user:password" in the
    0600 secret file) into ctr's prompt through a pseudo-terminal; it never reaches a command line."""
    with open(secret_file, encoding="utf-8") as handle:
        user, _, password = handle.read().partition(":")
    pid, master = pty.fork()
    if pid == 0:
        os.execvp(argv[0], [*argv[:-1], "--user", user, argv[-1]])  # noqa: S606 - argv, no shell
    buffer, answered = b"", False
    with open(log_file, "ab") as log:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            log.write(chunk)
            buffer = (buffer + chunk)[-64:]
            if not answered and b"Password:" in buffer:
                deadline = time.monotonic() + 5
                while termios.tcgetattr(master)[3] & termios.ECHO and time.monotonic() < deadline:
                    time.sleep(0.02)
                if termios.tcgetattr(master)[3] & termios.ECHO:  # typing now would echo it into the log
                    os.kill(pid, signal.SIGKILL)
                    log.write(b"\nctr: did not turn terminal echo off for its password prompt\n")
                    break
                os.write(master, password.encode() + b"\n")
                answered = True
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def main(argv: list[str]) -> int:
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    if command == "fetch" and len(args) in (5, 6):
        return fetch_credential(*args[:5], max_age=float(args[5]) if len(args) == 6 else 0)
    if command == "pty-pull" and len(args) >= 3:
        return pty_pull(args[0], args[1], args[2:])
    print("usage: build_cache_secrets.py fetch HOST SOURCE REGION REFERENCE OUT_FILE [MAX_AGE_SECONDS]"
          " | pty-pull SECRET_FILE LOG_FILE CTR_ARGS... REF", file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
