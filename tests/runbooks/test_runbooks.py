"""Respond (catalogue column 4): every alarm links a runbook, and every runbook is executable.

What is checked, and against what:
- (a) every catalogue row has ``runbooks/<ID>-<slug>.md`` whose title names the ID, and the
  index (``runbooks/README.md``) links it;
- (b) every alarm in the synthesized templates (``make synth``: cdk.out, cdk.out.prod) links,
  in its description, the runbook of the row its name starts with; the file exists and names
  the alarm;
- (c) every runbook except F15 names at least one alarm of its own row that exists, and every
  alarm name a runbook mentions exists in a template (no stale names);
- (d) every ``orders-ops ...`` command in the runbooks parses with ``ops.cli.build_parser()``;
- (e) every ``aws <service> <operation>`` is a real botocore operation, and its flags are
  members of the input shape or AWS CLI options; literal enum values are valid; a fenced
  command passes every required member.

Alarm-name matching rule (b, c): a runbook names an alarm when a backticked span in it equals
the alarm's name, or is a pattern for it: ``<Fn>`` stands for one logical function name of
``infra.config.FUNCTION_NAMES``; any other ``<placeholder>`` stands for one or more
hyphen-separated words of letters and digits (``F17-<queue>-dlq-not-empty``). The alarm's name
is its CloudFormation ``AlarmName`` from the catalogue ID on (a stage or stack prefix before
the ID is allowed and ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import botocore.session
import pytest
from botocore import xform_name
from botocore.exceptions import UnknownServiceError
from botocore.model import ListShape, OperationModel, ServiceModel, Shape

from infra.catalogue import CATALOGUE, RUNBOOK_BASE_URL, failure
from infra.config import FUNCTION_NAMES
from infra.service import this_service

ROOT: Final = Path(__file__).resolve().parents[2]
RUNBOOKS: Final = ROOT / "runbooks"
INDEX: Final = RUNBOOKS / "README.md"
TEMPLATES: Final = {
    "dev": this_service().template_path("dev", ROOT),
    "prod": this_service().template_path("prod", ROOT),
}
ALARM_TYPES: Final = frozenset({"AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm"})
# Rows without an alarm, with the reason (the runbook says so and gives the synth-time check).
NO_ALARM: Final = {"F15": "no stream mapping in this stack; the guardrail rejects one at synth"}

RUNBOOK_FILES: Final = sorted(RUNBOOKS.glob("F[0-9][0-9]-*.md"))
DOCUMENTS: Final = [*RUNBOOK_FILES, INDEX]

# -- markdown and shell parsing -----------------------------------------------------------------

FENCE: Final = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
INLINE_CODE: Final = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
# Placeholders the engineer fills in: <order_id>, <Fn>, <dlq-url>, <service:Action>.
PLACEHOLDER: Final = re.compile(r"<([A-Za-z][A-Za-z0-9_.:/-]*)>")
PLACEHOLDER_MARK: Final = re.compile(r"__PH_([A-Za-z0-9_.:/-]+?)__")
SUBSTITUTED: Final = "__SUBSTITUTED__"  # stands for a $(...) command substitution
REDIRECTIONS: Final = frozenset({">", ">>", "<", "2>", "2>&1", "&>"})
# Values orders-ops receives for placeholders (it validates some of them).
SAMPLES: Final = {
    "order_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
    "dlq-url": "https://sqs.eu-west-1.amazonaws.com/123456789012/sample-dlq",
}
SAMPLE_DEFAULT: Final = "sample"


@dataclass(frozen=True)
class Snippet:
    """Shell text from a runbook: a fenced block or one inline code span."""

    path: Path
    text: str
    fenced: bool


def snippets(path: Path) -> list[Snippet]:
    markdown = path.read_text(encoding="utf-8")
    found = [Snippet(path, block, fenced=True) for block in FENCE.findall(markdown)]
    prose = FENCE.sub("", markdown)
    found += [Snippet(path, span, fenced=False) for span in INLINE_CODE.findall(prose)]
    return found


def _matching(text: str, start: int, opening: str, closing: str) -> int:
    """Index of the bracket closing the one opened just before ``start``, quote-aware."""
    depth = 1
    quote: str | None = None
    index = start
    while index < len(text):
        char = text[index]
        if quote == "'":
            quote = None if char == "'" else quote
        elif char == "\\":
            index += 1
        elif quote == '"':
            quote = None if char == '"' else quote
        elif char in "'\"":
            quote = char
        elif char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return index
        index += 1
    raise ValueError(f"unbalanced {opening}{closing} in shell text: {text!r}")


def _simple_commands(script: str) -> Iterator[str]:
    """Split shell text into simple commands: on newlines, ``;``, pipes, ``&&``/``||`` and
    braces outside quotes; every ``$(...)`` is checked as a command of its own and replaced
    by one word in the enclosing command. Enough shell for runbooks, not a full parser."""
    current: list[str] = []
    quote: str | None = None
    index = 0
    while index < len(script):
        char = script[index]
        if quote == "'":
            current.append(char)
            quote = None if char == "'" else quote
            index += 1
            continue
        if char == "\\" and index + 1 < len(script):
            current.append(script[index : index + 2])
            index += 2
            continue
        if script.startswith("$(", index):
            end = _matching(script, index + 2, "(", ")")
            yield from _simple_commands(script[index + 2 : end])
            current.append(SUBSTITUTED)
            index = end + 1
            continue
        if script.startswith("${", index):
            end = _matching(script, index + 2, "{", "}")
            current.append(script[index : end + 1])
            index = end + 1
            continue
        if quote == '"':
            current.append(char)
            quote = None if char == '"' else quote
            index += 1
            continue
        if char in "'\"":
            quote = char
            current.append(char)
        elif char == "#" and (not current or current[-1].isspace()):
            newline = script.find("\n", index)
            index = len(script) if newline < 0 else newline
            continue
        elif char in "\n;|&(){}":
            yield "".join(current)
            current = []
        else:
            current.append(char)
        index += 1
    yield "".join(current)


@dataclass(frozen=True)
class Command:
    path: Path
    program: str  # "aws" or "orders-ops"
    argv: tuple[str, ...]  # after the program name, placeholders marked
    fenced: bool

    def __str__(self) -> str:
        shown = PLACEHOLDER_MARK.sub(r"<\1>", " ".join((self.program, *self.argv)))
        return f"{self.path.name}: {shown}"


def commands(path: Path, program: str) -> list[Command]:
    found: list[Command] = []
    for snippet in snippets(path):
        marked = PLACEHOLDER.sub(lambda m: f"__PH_{m.group(1)}__", snippet.text)
        marked = marked.replace("\\\n", " ")
        for text in _simple_commands(marked):
            try:
                words = shlex.split(text, posix=True)
            except ValueError as error:
                raise AssertionError(f"{path.name}: cannot split {text!r}: {error}") from None
            if program not in words:
                continue
            argv = words[words.index(program) + 1 :]
            for position, word in enumerate(argv):
                if word in REDIRECTIONS:
                    argv = argv[:position]
                    break
            if not argv and not snippet.fenced:
                continue  # the program's name in prose (`orders-ops`), not a command
            found.append(Command(path, program, tuple(argv), snippet.fenced))
    return found


# -- (a) one runbook per catalogue row ----------------------------------------------------------


@pytest.mark.parametrize("failure_id", sorted(CATALOGUE))
def test_every_catalogue_row_has_its_runbook_titled_with_its_id(failure_id: str) -> None:
    path = ROOT / failure(failure_id).runbook
    assert path.is_file(), f"{failure_id}: missing {failure(failure_id).runbook}"
    title = path.read_text(encoding="utf-8").splitlines()[0]
    assert title.startswith("# "), f"{path.name}: first line must be the '# ' title"
    assert re.search(rf"\b{failure_id}\b", title), f"{path.name}: title must name {failure_id}"


def test_no_runbook_outside_the_catalogue() -> None:
    expected = {ROOT / row.runbook for row in CATALOGUE.values()}
    assert set(RUNBOOK_FILES) == expected


def test_index_links_every_runbook() -> None:
    index = INDEX.read_text(encoding="utf-8")
    missing = [row.id for row in CATALOGUE.values() if f"]({Path(row.runbook).name})" not in index]
    assert not missing, f"runbooks/README.md does not link: {missing}"


# -- alarms in the synthesized templates ------------------------------------------------------

ALARM_NAME: Final = re.compile(r"F\d{2}-[A-Za-z0-9-]+$")
RUNBOOK_REF: Final = re.compile(r"(\S*)(runbooks/F\d{2}-[a-z0-9-]+\.md)")
# A backticked alarm name or pattern in a runbook.
ALARM_MENTION: Final = re.compile(r"`(F\d{2}-[A-Za-z0-9<>-]+)`")


def render(value: Any) -> str:
    """A CloudFormation string value as text; tokens become ``${...}`` placeholders."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        if "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            return str(separator).join(render(part) for part in parts)
        if "Fn::Sub" in value:
            sub = value["Fn::Sub"]
            return str(sub if isinstance(sub, str) else sub[0])
        if "Ref" in value:
            return "${" + str(value["Ref"]) + "}"
    return "${token}"


@dataclass(frozen=True)
class Alarm:
    stage: str
    logical_id: str
    name: str  # from the catalogue ID on
    description: str

    @property
    def failure_id(self) -> str:
        return self.name[:3]


@cache
def template(stage: str) -> Mapping[str, Any]:
    path = TEMPLATES[stage]
    if not path.is_file():
        pytest.fail(
            f"{path.relative_to(ROOT)} is missing: run `make synth` first (it writes cdk.out "
            "and cdk.out.prod); the runbook checks read the synthesized alarms",
            pytrace=False,
        )
    loaded: Mapping[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def alarms() -> list[Alarm]:
    found: list[Alarm] = []
    for stage in TEMPLATES:
        for logical_id, resource in template(stage).get("Resources", {}).items():
            if resource.get("Type") not in ALARM_TYPES:
                continue
            props = resource.get("Properties", {})
            raw_name = render(props.get("AlarmName", ""))
            match = ALARM_NAME.search(raw_name)
            assert match, (
                f"{stage} {logical_id}: AlarmName {raw_name!r} does not end in '<ID>-<what>' "
                "(docs/operations-contract.md)"
            )
            found.append(
                Alarm(stage, logical_id, match.group(), render(props.get("AlarmDescription", "")))
            )
    return found


def mention_regex(mention: str) -> re.Pattern[str]:
    parts: list[str] = []
    for index, piece in enumerate(re.split(r"<([^>]+)>", mention)):
        if index % 2 == 0:
            parts.append(re.escape(piece))
        elif piece == "Fn":
            parts.append("(?:" + "|".join(map(re.escape, FUNCTION_NAMES)) + ")")
        else:
            parts.append(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")
    return re.compile("".join(parts))


def alarm_mentions(path: Path) -> set[str]:
    return set(ALARM_MENTION.findall(path.read_text(encoding="utf-8")))


def names_alarm(path: Path, alarm_name: str) -> bool:
    return any(mention_regex(m).fullmatch(alarm_name) for m in alarm_mentions(path))


# -- (b) every alarm links a runbook that names it ------------------------------------------


def test_templates_have_alarms() -> None:
    assert alarms(), "no AWS::CloudWatch::Alarm in the synthesized templates"


def test_every_alarm_links_its_rows_runbook_which_names_it() -> None:
    problems: list[str] = []
    for alarm in alarms():
        where = f"{alarm.stage} {alarm.name}"
        if alarm.failure_id not in CATALOGUE:
            problems.append(f"{where}: {alarm.failure_id} is not a catalogue ID")
            continue
        refs = RUNBOOK_REF.findall(alarm.description)
        if not refs:
            problems.append(f"{where}: the description links no runbooks/<ID>-<slug>.md")
            continue
        for prefix, runbook in refs:
            if prefix.startswith("http") and prefix != RUNBOOK_BASE_URL:
                problems.append(f"{where}: runbook URL {prefix}{runbook} is not under the base")
            if runbook != failure(alarm.failure_id).runbook:
                problems.append(
                    f"{where}: links {runbook}, its row's is {failure(alarm.failure_id).runbook}"
                )
            path = ROOT / runbook
            if not path.is_file():
                problems.append(f"{where}: links {runbook}, which does not exist")
            elif not names_alarm(path, alarm.name):
                problems.append(f"{where}: {runbook} does not name the alarm (in backticks)")
    assert not problems, "\n".join(problems)


# -- (c) every runbook names real alarms of its row --------------------------------------------


@pytest.mark.parametrize("failure_id", sorted(CATALOGUE))
def test_runbook_names_an_existing_alarm_of_its_row(failure_id: str) -> None:
    path = ROOT / failure(failure_id).runbook
    own = [m for m in alarm_mentions(path) if m.startswith(f"{failure_id}-")]
    if failure_id in NO_ALARM:
        assert not own, f"{path.name} names alarms, but {failure_id} has none: {own}"
        assert "no alarm" in path.read_text(encoding="utf-8").lower()
        return
    names = {alarm.name for alarm in alarms()}
    assert any(mention_regex(m).fullmatch(n) for m in own for n in names), (
        f"{path.name} names none of the {failure_id} alarms in the templates "
        f"(it names {sorted(own)}; templates have "
        f"{sorted(n for n in names if n.startswith(failure_id))})"
    )


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_every_alarm_a_runbook_names_exists(path: Path) -> None:
    names = {alarm.name for alarm in alarms()}
    stale = sorted(
        m for m in alarm_mentions(path) if not any(mention_regex(m).fullmatch(n) for n in names)
    )
    assert not stale, f"{path.name} names alarms no template has: {stale}"


# -- (d) orders-ops commands parse ----------------------------------------------------------------


def ops_parser() -> argparse.ArgumentParser:
    try:
        from ops.cli import build_parser
    except ImportError as error:
        pytest.fail(f"ops.cli.build_parser is not importable yet: {error}", pytrace=False)
    return build_parser()


def sample_argv(argv: tuple[str, ...]) -> list[str]:
    return [
        PLACEHOLDER_MARK.sub(lambda m: SAMPLES.get(m.group(1), SAMPLE_DEFAULT), word)
        for word in argv
    ]


def test_runbooks_use_orders_ops() -> None:
    assert any(commands(path, "orders-ops") for path in DOCUMENTS)


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_orders_ops_commands_parse(path: Path) -> None:
    parser = ops_parser()
    problems: list[str] = []
    for command in commands(path, "orders-ops"):
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                parser.parse_args(sample_argv(command.argv))
        except SystemExit:
            problems.append(f"{command}\n    {stderr.getvalue().strip().splitlines()[-1:]}")
    assert not problems, "\n".join(problems)


# -- (e) aws commands exist in botocore ----------------------------------------------------------

# AWS CLI service names that differ from botocore's.
CLI_SERVICES: Final = {"deploy": "codedeploy", "s3api": "s3", "configservice": "config"}
# Options of the AWS CLI itself (aws help), valid on every operation.
GLOBAL_OPTIONS: Final = frozenset(
    {
        "--debug",
        "--endpoint-url",
        "--no-verify-ssl",
        "--no-paginate",
        "--output",
        "--query",
        "--profile",
        "--region",
        "--version",
        "--color",
        "--no-sign-request",
        "--ca-bundle",
        "--cli-read-timeout",
        "--cli-connect-timeout",
        "--cli-binary-format",
        "--no-cli-pager",
        "--cli-auto-prompt",
        "--no-cli-auto-prompt",
        "--cli-input-json",
        "--cli-input-yaml",
        "--generate-cli-skeleton",
    }
)
# Added by the CLI to operations botocore can paginate.
PAGINATION_OPTIONS: Final = frozenset({"--starting-token", "--page-size", "--max-items"})
OUTPUT_FORMATS: Final = frozenset({"json", "text", "table", "yaml", "yaml-stream"})


@cache
def session() -> botocore.session.Session:
    return botocore.session.get_session()


@cache
def service_model(cli_service: str) -> ServiceModel | None:
    try:
        return session().get_service_model(CLI_SERVICES.get(cli_service, cli_service))
    except UnknownServiceError:
        return None


def can_paginate(service: ServiceModel, operation: str) -> bool:
    try:
        session().get_paginator_model(service.service_name).get_paginator(operation)
    except ValueError:
        return False
    return True


def _literal(value: str) -> bool:
    return not any(mark in value for mark in ("$", "__PH_", SUBSTITUTED, "=", "{", "["))


def _enum_problems(flag: str, shape: Shape, values: list[str]) -> list[str]:
    member = shape.member if isinstance(shape, ListShape) else shape
    allowed = getattr(member, "enum", None) or []
    if not allowed or (not isinstance(shape, ListShape) and len(values) > 1):
        return []
    return [
        f"{flag} {value!r} is not one of {sorted(allowed)}"
        for value in values
        if _literal(value) and value not in allowed
    ]


def _options(words: list[str]) -> Iterator[tuple[str, list[str]]]:
    """(``--flag``, its values) for every option word; positional words are skipped."""
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not word.startswith("--"):
            continue
        flag, _, inline_value = word.partition("=")
        values = [inline_value] if inline_value else []
        while not inline_value and index < len(words) and not words[index].startswith("--"):
            values.append(words[index])
            index += 1
        yield flag, values


def _option_problems(
    service: ServiceModel, operation: OperationModel, flag: str, values: list[str]
) -> list[str]:
    """Problems of one option that is not a member of the operation's input."""
    if flag in GLOBAL_OPTIONS:
        output = values[0] if flag == "--output" and values else None
        if output is not None and _literal(output) and output not in OUTPUT_FORMATS:
            return [f"--output {output!r} is not a CLI output format"]
        return []
    if flag in PAGINATION_OPTIONS:
        if can_paginate(service, operation.name):
            return []
        return [f"{flag}: {operation.name} does not paginate"]
    return [f"{flag} is not a parameter of {operation.name} nor a CLI option"]


def check_aws(command: Command) -> list[str]:
    if len(command.argv) < 2:
        return ["expected `aws <service> <operation>`"]
    cli_service, cli_operation, *rest = command.argv
    service = service_model(cli_service)
    if service is None:
        return [f"unknown service {cli_service!r}"]
    operations = {xform_name(name, "-"): name for name in service.operation_names}
    if cli_operation not in operations:
        return [f"{cli_service} has no operation {cli_operation!r}"]
    operation: OperationModel = service.operation_model(operations[cli_operation])
    shape = operation.input_shape
    members: dict[str, Shape] = (
        {xform_name(name, "-"): member for name, member in shape.members.items()}
        if shape is not None
        else {}
    )
    problems: list[str] = []
    given: set[str] = set()
    for flag, values in _options(rest):
        option = flag[2:]
        negated = option[3:] if option.startswith("no-") else None
        if option in members:
            given.add(option)
            problems += _enum_problems(flag, members[option], values)
        elif negated in members and members[negated].type_name == "boolean":
            given.add(negated)
        else:
            problems += _option_problems(service, operation, flag, values)
    if command.fenced and "--cli-input-json" not in rest and shape is not None:
        required = {xform_name(name, "-") for name in shape.required_members}
        missing = sorted(required - given)
        if missing:
            problems.append(f"missing required {', '.join('--' + m for m in missing)}")
    return problems


def test_runbooks_use_aws_commands() -> None:
    assert sum(len(commands(path, "aws")) for path in DOCUMENTS) > 50


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_aws_commands_are_real_botocore_operations(path: Path) -> None:
    problems = [
        f"{command}\n    {problem}"
        for command in commands(path, "aws")
        for problem in check_aws(command)
    ]
    assert not problems, "\n".join(problems)


# -- the checker itself: it must reject what it exists to catch ----------------------------------


def _aws(text: str, *, fenced: bool = True) -> list[str]:
    [command] = [c for c in _commands_in(text) if c.program == "aws"]
    return check_aws(Command(command.path, "aws", command.argv, fenced))


def _commands_in(text: str) -> list[Command]:
    found: list[Command] = []
    for chunk in _simple_commands(PLACEHOLDER.sub(lambda m: f"__PH_{m.group(1)}__", text)):
        words = shlex.split(chunk)
        for program in ("aws", "orders-ops"):
            if program in words:
                argv = tuple(words[words.index(program) + 1 :])
                found.append(Command(Path("inline.md"), program, argv, True))
    return found


def test_checker_accepts_real_commands() -> None:
    assert (
        _aws(
            "aws logs start-query --log-group-names a b --start-time 1 --end-time 2 "
            "--query-string 'fields @message | limit 5' --query queryId --output text"
        )
        == []
    )
    assert _aws("aws lambda update-event-source-mapping --uuid <uuid> --no-enabled") == []
    assert (
        _aws(
            "aws stepfunctions list-executions --state-machine-arn x "
            "--status-filter FAILED --max-items 5"
        )
        == []
    )
    assert _aws("aws deploy stop-deployment --deployment-id d --auto-rollback-enabled") == []


def test_checker_rejects_wrong_commands() -> None:
    assert _aws("aws sqs redrive-dlq --queue-url x")  # no such operation
    assert _aws("aws sqs start-message-move-task --source-queue x")  # no such flag
    assert _aws("aws stepfunctions list-executions --state-machine-arn x --status-filter FAIL")
    assert _aws("aws sqs get-queue-attributes --queue-url x --attribute-names NumberOfMessagesSent")
    assert _aws("aws sqs get-queue-attributes --attribute-names All")  # missing --queue-url
    assert _aws("aws sts get-session-token --max-items 3")  # does not paginate


def test_shell_splitting_finds_nested_and_chained_commands() -> None:
    text = (
        'QID=$(aws logs start-query --log-group-names "$(lg Api)" --start-time '
        "\"$(date -u -d '-1 hour' +%s)\" --end-time 2 --query-string 'a | b (c)' "
        "--query queryId --output text) && orders-ops intake status; sleep 1 | aws sts get-caller-identity"
    )
    found = [(c.program, c.argv[:2]) for c in _commands_in(text)]
    assert found == [
        ("aws", ("logs", "start-query")),
        ("orders-ops", ("intake", "status")),
        ("aws", ("sts", "get-caller-identity")),
    ]


# -- the README's deploy guide: the same checks as the runbooks ----------------------------------

README_DEPLOY_SECTION: Final = re.compile(
    r"^## Deploying to an AWS account\n.*?(?=^## )", re.MULTILINE | re.DOTALL
)


def test_readme_deploy_commands_are_real(tmp_path: Path) -> None:
    # Given the README's "Deploying to an AWS account" section as a document of its own
    found = README_DEPLOY_SECTION.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert found, "README.md has no '## Deploying to an AWS account' section"
    section = tmp_path / "README-deploying.md"
    section.write_text(found.group(0), encoding="utf-8")

    # When every aws and orders-ops command in it is checked as the runbooks' are
    aws_commands = commands(section, "aws")
    problems = [f"{c}\n    {problem}" for c in aws_commands for problem in check_aws(c)]
    parser = ops_parser()
    for command in commands(section, "orders-ops"):
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            try:
                parser.parse_args(sample_argv(command.argv))
            except SystemExit:
                problems.append(f"{command}\n    does not parse")

    # Then
    assert len(aws_commands) >= 10, "the deploy guide lost its aws commands"
    assert commands(section, "orders-ops"), "the deploy guide lost its preflight command"
    assert not problems, "\n".join(problems)
