"""build_cache_secrets.py: each credential source fetched into a 0600 user:password file, and typed
into a password prompt through a terminal. No root: `aws` and `ctr` are stand-ins on PATH."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_build_cache_helpers import python39

from ml_cache.scripts import build_cache_secrets as secrets

SECRETS = Path(secrets.__file__)
HOST = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
ARN = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:ml-cache/ngc-AbCdEf"
PASSWORD = "pw-Zq8!x$y 'quoted' \"double\""

FAKE_AWS = """#!{python}
# Stand-in for the AWS CLI: logs its argv, answers from a JSON file of argv -> (stdout, exit status).
import json, sys
with open({log!r}, "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
answers = json.load(open({answers!r}))
out, status = answers.get(" ".join(sys.argv[1:]), ["", 254])
if status:
    sys.stderr.write("\\nAn error occurred (ResourceNotFoundException) when calling the operation: not found\\n")
sys.stdout.write(out)
sys.exit(status)
"""

ECR_ARGS = "ecr get-login-password --region us-west-2"
SECRET_ARGS = (f"secretsmanager get-secret-value --secret-id {ARN} --region eu-central-1 --query SecretString"
               " --output text")
SSM_ARGS = "ssm get-parameter --with-decryption --name /ml-cache/reg --query Parameter.Value --output text"


@pytest.fixture
def aws(tmp_path: Path):
    """Install a fake aws answering `answers`; returns (set_answers, argv log)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log, answers = tmp_path / "aws.log", tmp_path / "answers.json"
    (bin_dir / "aws").write_text(FAKE_AWS.format(python=sys.executable, log=str(log), answers=str(answers)))
    (bin_dir / "aws").chmod(0o755)
    answers.write_text("{}")
    log.touch()

    def answer(mapping: dict[str, tuple[str, int]]) -> None:
        answers.write_text(json.dumps(mapping))

    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return answer, log, env


def fetch(env: dict, *args: str) -> subprocess.CompletedProcess[str]:
    """Run by this interpreter: a pyenv `python3` shim would put pyenv's own (real) aws first on PATH."""
    return subprocess.run([sys.executable, str(SECRETS), "fetch", *args], capture_output=True, text=True, env=env,
                          check=False)


@pytest.mark.parametrize(("source", "region", "reference", "argv", "answer", "expected"), [
    ("ecr", "us-west-2", "-", ECR_ARGS, "eyJ0b2tlbiI6IjEyMyJ9\n", "AWS:eyJ0b2tlbiI6IjEyMyJ9"),
    ("secretsmanager", "eu-central-1", ARN, SECRET_ARGS,
     json.dumps({"username": "$oauthtoken", "password": PASSWORD}) + "\n", f"$oauthtoken:{PASSWORD}"),
    ("ssm_secure_parameter", "-", "/ml-cache/reg", SSM_ARGS, f"demo:{PASSWORD}\n", f"demo:{PASSWORD}"),
])
def test_each_source_lands_in_a_private_user_password_file(aws, tmp_path: Path, source: str, region: str,
                                                           reference: str, argv: str, answer: str,
                                                           expected: str) -> None:
    set_answers, log, env = aws
    set_answers({argv: [answer, 0]})
    out = tmp_path / f"secret.{HOST}"
    proc = fetch(env, HOST, source, region, reference, str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    assert out.read_text() == expected
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert log.read_text().splitlines() == [argv]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["bin", "aws.log", "answers.json", out.name])


@pytest.mark.parametrize(("source", "reference", "argv", "answer", "reason"), [
    ("secretsmanager", ARN, SECRET_ARGS, [PASSWORD, 0],
     'its SecretString is not JSON {"username": ..., "password": ...}'),
    ("secretsmanager", ARN, SECRET_ARGS, [json.dumps({"user": "x", "password": PASSWORD}), 0], "is not JSON"),
    ("secretsmanager", ARN, SECRET_ARGS, ["", 254], "An error occurred (ResourceNotFoundException)"),
    ("ssm_secure_parameter", "/ml-cache/reg", SSM_ARGS, [PASSWORD.replace(":", ""), 0], "it must hold user:password"),
    ("ssm_secure_parameter", "/ml-cache/reg", SSM_ARGS, [f"demo:{PASSWORD}\x03", 0], "control character"),
    ("ssm_secure_parameter", "/ml-cache/reg", SSM_ARGS, [f"demo:{PASSWORD}\nx", 0], "control character"),
    ("ssm_secure_parameter", "/ml-cache/reg", SSM_ARGS, ["demo:" + "p" * 4096, 0],
     "longer than ctr's prompt reads (4095 bytes)"),
])
def test_a_bad_or_missing_credential_names_host_and_source_never_the_value(
        aws, tmp_path: Path, source: str, reference: str, argv: str, answer: list, reason: str) -> None:
    set_answers, _, env = aws
    set_answers({argv: answer})
    region = "eu-central-1" if source == "secretsmanager" else "-"
    proc = fetch(env, "nvcr.io", source, region, reference, str(tmp_path / "secret.nvcr.io"))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith(f"cannot use the credentials for nvcr.io from {source} {reference}: ")
    assert reason in proc.stderr
    assert PASSWORD not in proc.stderr and "p" * 100 not in proc.stderr
    assert not (tmp_path / "secret.nvcr.io").exists()


def test_a_fresh_token_is_kept_and_an_old_one_fetched_again(aws, tmp_path: Path) -> None:
    set_answers, log, env = aws
    set_answers({ECR_ARGS: ["new-token", 0]})
    out = tmp_path / "secret.ecr"
    out.write_text("AWS:old-token")
    assert fetch(env, HOST, "ecr", "us-west-2", "-", str(out), "21600").returncode == 0
    assert out.read_text() == "AWS:old-token" and log.read_text() == ""

    seven_hours_ago = time.time() - 7 * 3600
    os.utime(out, (seven_hours_ago, seven_hours_ago))
    assert fetch(env, HOST, "ecr", "us-west-2", "-", str(out), "21600").returncode == 0
    assert out.read_text() == "AWS:new-token" and log.read_text() == f"{ECR_ARGS}\n"


FAKE_CTR = """#!{python}
# Stand-in for `ctr images pull --user USER REF`: asks for the password like ctr (echo off), records it.
import getpass, json, os, sys
password = getpass.getpass("Password: ")
with open({record!r}, "w") as out:
    json.dump({{"argv": sys.argv[1:], "password": password, "environ": dict(os.environ)}}, out)
print("done: pulled", sys.argv[-1])
"""


def test_pty_pull_types_the_password_into_the_prompt_and_keeps_it_off_argv_and_log(tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    (tmp_path / "ctr").write_text(FAKE_CTR.format(python=sys.executable, record=str(record)))
    (tmp_path / "ctr").chmod(0o755)
    (tmp_path / "secret").write_text(f"demo:{PASSWORD}")
    proc = subprocess.run([sys.executable, str(SECRETS), "pty-pull", str(tmp_path / "secret"), str(tmp_path / "log"),
                           str(tmp_path / "ctr"), "images", "pull", "r.example.com/a:1"],
                          capture_output=True, text=True, check=False, timeout=30)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(record.read_text())
    assert seen["password"] == PASSWORD
    assert seen["argv"] == ["images", "pull", "--user", "demo", "r.example.com/a:1"]
    assert not any(PASSWORD in value for value in seen["environ"].values())
    log = (tmp_path / "log").read_text()
    assert "Password:" in log and "done: pulled r.example.com/a:1" in log and PASSWORD not in log
    assert PASSWORD not in proc.stdout + proc.stderr


def test_unknown_subcommand_prints_usage() -> None:
    proc = subprocess.run([sys.executable, str(SECRETS), "print-secret"], capture_output=True, text=True, check=False)
    assert proc.returncode == 64 and "usage:" in proc.stderr


def test_runs_on_the_builders_python_3_9(aws, tmp_path: Path) -> None:
    python = python39()
    if python is None:
        pytest.skip("no Python 3.9 (the EKS AL2023 AMI's python3) installed")
    set_answers, _, env = aws
    set_answers({SECRET_ARGS: [json.dumps({"username": "u", "password": PASSWORD}), 0]})
    out = tmp_path / "secret.nvcr.io"
    proc = subprocess.run([python, str(SECRETS), "fetch", "nvcr.io", "secretsmanager", "eu-central-1", ARN, str(out)],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == f"u:{PASSWORD}"
