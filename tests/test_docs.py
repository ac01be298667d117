"""The documentation holds together: every relative link and `#anchor` of README.md,
CONTRIBUTING.md and docs/*.md resolves, CONTRIBUTING's layout map names every module of
models/, mro/ and rewards/, and the README's commands parse as typed, the cheap ones run,
and its test command is the one CI runs."""

import re
import shlex
from pathlib import Path

import pytest

from mro import cli, paths

ROOT = paths.ROOT
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
  """`text` without its fenced code blocks (a `# comment` in a bash block is no heading,
  and a `[x](y)` in code is no link)."""
  return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def slug(heading: str) -> str:
  """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
  text = re.sub(r"[`*_]", "", heading.strip().lower())
  return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
  found, seen = set(), {}
  for heading in re.findall(r"^#{1,6} (.+)$", prose(page.read_text()), flags=re.M):
    base = slug(heading)
    n = seen.get(base, 0)
    seen[base] = n + 1
    found.add(base if n == 0 else f"{base}-{n}")
  return found


def broken_links(page: Path) -> list[str]:
  out = []
  text = re.sub(r"`[^`\n]*`", "", prose(page.read_text()))  # inline code is no link
  for target in LINK.findall(text):
    if re.match(r"[a-z]+:", target):  # http(s), mailto: not ours to check
      continue
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
      out.append(f"{target}: no such file")
    elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
      out.append(f"{target}: no heading #{anchor} in {paths.relative(dest)}")
  return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
  assert broken_links(page) == []


def test_the_link_check_sees_a_missing_file_and_a_missing_anchor(tmp_path):
  (tmp_path / "b.md").write_text("# Fast decoding: KV caches\n\n```bash\n# not a heading\n```\n")
  page = tmp_path / "a.md"
  page.write_text("[ok](b.md#fast-decoding-kv-caches) [gone](c.md) [bad](b.md#not-a-heading) "
                  "[web](https://example.com) `[code](d.md)`\n\n## Own one\n[self](#own-one)")
  assert [b.split(": ")[0] for b in broken_links(page)] == ["c.md", "b.md#not-a-heading"]


def test_every_page_of_docs_opens_with_what_it_is_for():
  for page in sorted((ROOT / "docs").glob("*.md")):
    lines = page.read_text().splitlines()
    assert lines[0].startswith("# "), page.name
    first = next(line for line in lines[1:] if line.strip())
    assert not first.startswith(("#", "|", "```", "-")), f"{page.name}: open with a sentence"


# --- CONTRIBUTING's layout map -----------------------------------------------------------


def layout_names(text: str) -> set[str]:
  """The module paths CONTRIBUTING's layout block names: a line starting with `dir/` opens
  that folder (under the top-level folder of the last unindented line), a line starting
  with a file at the first indent is in the top-level folder, continuation lines stay in
  the folder they continue."""
  block = text.split("## Layout and data flow", 1)[1].split("```", 2)[1]
  named, top, folder = set(), "", ""
  for line in block.splitlines()[1:]:
    if not line.strip():
      continue
    indent, first = len(line) - len(line.lstrip()), line.split()[0]
    if first.endswith("/"):
      top, folder = (first, first) if indent == 0 else (top, top + first)
    elif indent == 2 and first.endswith(".py"):
      folder = top
    named |= {folder + name for name in re.findall(r"\w+\.py", line)}
  return named


def test_contributing_names_every_module_and_no_module_that_is_gone():
  named = layout_names((ROOT / "CONTRIBUTING.md").read_text())
  modules = {str(p.relative_to(ROOT)) for pkg in ("models", "mro", "rewards")
             for p in (ROOT / pkg).rglob("*.py") if p.name != "__init__.py"}
  assert sorted(modules - named) == [], "add these to CONTRIBUTING.md's layout"
  assert sorted(n for n in named if n.split("/")[0] in ("models", "mro", "rewards")
                and n not in modules) == [], "CONTRIBUTING.md names modules that are gone"


def test_the_layout_parser_places_files_in_their_folders():
  text = ("## Layout and data flow\n\n```\nmro/   the toolkit\n  files.py   io · progress.py\n"
          "  sweeps/   spec.py ·\n             driver.py\nrewards/   combine.py\n```\n")
  assert layout_names(text) == {"mro/files.py", "mro/progress.py", "mro/sweeps/spec.py",
                                "mro/sweeps/driver.py", "rewards/combine.py"}


# --- the README's commands ---------------------------------------------------------------


def readme_commands() -> list[str]:
  """Every command line of the README's bash blocks (comments and prompts stripped)."""
  text = (ROOT / "README.md").read_text()
  lines = [line.split(" # ")[0].strip() for block in
           re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
           for line in block.splitlines()]
  return [line for line in lines if line and not line.startswith("#")]


MRO_COMMANDS = [c for c in readme_commands() if c.startswith("mro ")]
# Cheap enough to run in the suite (the shipped models, a few prompts); the others are
# parsed only (long benchmarks and training runs, covered by shrunk tests elsewhere).
CHEAP = {
    'mro sample --model default --task sudoku --prompt "Sudoku 0040402310003014"':
        "<answer>2341412314323214</answer>",
    "mro eval --model default --task sudoku --steps L/4 --limit 32": "sudoku",
}


def test_the_readme_test_command_is_the_one_ci_runs():
  commands = readme_commands()
  assert "experiments/venv.sh ray,lm-eval" in commands and ".venv/bin/pytest -q" in commands
  ci = (ROOT / ".ci" / "run").read_text()
  assert "experiments/venv.sh ray,lm-eval" in ci and re.search(r"\.venv/bin/pytest -q\b", ci)
  assert "source .venv/bin/activate" in commands  # the bare `mro` of every later command


@pytest.mark.parametrize("command", MRO_COMMANDS)
def test_every_readme_mro_command_parses_as_typed(command):
  argv = shlex.split(command)[1:]
  args = cli.build_parser().parse_args(argv)  # a wrong flag or verb exits here
  assert args.func is not None


def test_the_cheap_readme_commands_are_in_the_readme_with_the_output_it_states():
  assert set(CHEAP) <= set(MRO_COMMANDS)
  sudoku = 'mro sample --model default --task sudoku --prompt "Sudoku 0040402310003014"'
  assert f"`{CHEAP[sudoku]}`" in (ROOT / "README.md").read_text()  # the answer it promises


@pytest.mark.integration  # runs the shipped models
@pytest.mark.parametrize("command", sorted(CHEAP))
def test_the_cheap_readme_commands_run_as_typed(command, capsys):
  code = cli.main(shlex.split(command)[1:])
  out, err = capsys.readouterr()
  assert code == 0, err
  assert CHEAP[command] in out


def test_every_verb_of_the_readme_table_has_help(capsys):
  verbs = re.findall(r"^\| `mro ([a-z-]+)` \|", (ROOT / "README.md").read_text(), flags=re.M)
  assert len(verbs) >= 10
  for verb in verbs:
    if verb == "lm-eval":  # lm-eval's own parser (optional extra): listed by `mro --help`
      continue
    with pytest.raises(SystemExit) as done:
      cli.main([verb, "--help"])
    assert done.value.code == 0 and f"usage: mro {verb}" in capsys.readouterr().out
  with pytest.raises(SystemExit):
    cli.main(["--help"])
  listed = capsys.readouterr().out
  assert all(verb in listed for verb in verbs)
