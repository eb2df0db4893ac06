"""``gptcore class feedback``: nbgrader's HTML feedback, hidden tests removed.

Feedback is rendered from autograded notebooks whose hidden tests are replaced
by a placeholder (and scrubbed from outputs and tracebacks: a notebook may
print them itself), with rich outputs shown as text; every page is sanitised
with nh3 (static: no script, no event handler, no ``javascript:`` URL) and
every file is checked for hidden-test lines before it reaches ``feedback/``.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..cells import HIDDEN_BEGIN, HIDDEN_END, HIDDEN_PLACEHOLDER
from ..workspace import Course, nbgrader_api
from .collect import is_regular
from .report import ClassConfig, ClassReport, StudentResult, class_config, progress_bar

__all__ = ["feedback", "hidden_lines", "leaked_lines", "sanitize_page"]


def hidden_lines(course: Course, lesson: str) -> list[str]:
    """Lines of the lesson's hidden tests that must never reach a student."""
    lines: list[str] = []
    for nb_path in sorted((course.solutions / lesson).glob("*.ipynb")):
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        for cell in nb.get("cells", []):
            inside = False
            for line in "".join(cell.get("source", "")).splitlines():
                if line.strip() == HIDDEN_BEGIN:
                    inside = True
                elif line.strip() == HIDDEN_END:
                    inside = False
                elif inside and len(line.strip()) >= 8:
                    lines.append(line.strip())
    return list(dict.fromkeys(lines))


def _strip_hidden(nb: dict[str, Any], secret: list[str]) -> dict[str, Any]:
    """The notebook without hidden tests: sources, outputs and tracebacks."""

    def scrub(text: str) -> str:
        for line in secret:
            text = text.replace(line, "[hidden test]")
        return text

    pattern = re.compile(
        rf"^[ \t]*{re.escape(HIDDEN_BEGIN)}.*?^[ \t]*{re.escape(HIDDEN_END)}[ \t]*$", re.M | re.S
    )
    for cell in nb.get("cells", []):
        src = "".join(cell.get("source", ""))
        had_hidden = HIDDEN_BEGIN in src
        cell["source"] = scrub(pattern.sub(HIDDEN_PLACEHOLDER, src))
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                out["text"] = scrub("".join(out.get("text", "")))
            elif out.get("output_type") == "error":
                out["evalue"] = scrub(str(out.get("evalue", "")))
                if had_hidden:  # a traceback quotes the hidden line that failed
                    out["traceback"] = [f"{out.get('ename')}: {out['evalue']}"]
                else:
                    out["traceback"] = [scrub(t) for t in out.get("traceback", [])]
            for mime, value in (out.get("data") or {}).items():
                if isinstance(value, str) or isinstance(value, list):
                    text = "".join(value) if isinstance(value, list) else value
                    if mime.startswith("text/") or mime.endswith("json"):
                        out["data"][mime] = scrub(text)
    return nb


# Outputs shown in feedback: plain text and raster images. HTML, JavaScript,
# SVG, Markdown and widget outputs a student's code produced are shown as text.
_SHOWN_MIMES = ("text/plain", "image/png", "image/jpeg", "image/gif")
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "form-action 'none'; base-uri 'none'"
)


def _inert_outputs(nb: dict[str, Any]) -> dict[str, Any]:
    """Rich outputs as text: nothing a student's code displayed is rendered live."""
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            data = out.get("data")
            if not isinstance(data, dict):
                continue
            kept = {k: v for k, v in data.items() if k in _SHOWN_MIMES}
            dropped = [v for k, v in data.items() if k not in _SHOWN_MIMES]
            if dropped:  # its source says more than "<IPython.core.display.HTML object>"
                other = dropped[0]
                kept["text/plain"] = other if isinstance(other, str | list) else json.dumps(other)
            out["data"] = kept
            out.get("metadata", {}).clear()
    return nb


def _safe_url(tag: str, attr: str, value: str) -> str | None:
    """nh3's attribute filter: images only as embedded rasters, links only to the web."""
    if tag == "img" and attr == "src":
        ok = value.startswith(("data:image/png;", "data:image/jpeg;", "data:image/gif;"))
        return value if ok else None
    if tag == "a" and attr == "href":
        ok = value.startswith(("https://", "http://", "#"))
        return value if ok else None
    return value


def sanitize_page(page: str) -> str:
    """A feedback page made inert: the body through nh3 (no scripts, no event
    handlers, no ``javascript:`` URLs, no forms or frames), the template's styles kept,
    and a Content-Security-Policy that lets nothing run or load, should anything slip."""
    import nh3

    head, _, rest = page.partition("<body")
    body = rest.partition(">")[2].rpartition("</body>")[0] if rest else page
    # The template's own CSS (the head holds nothing from the student but the
    # escaped title); student content never brings a <style> of its own.
    styles = "\n".join(re.findall(r"<style[^>]*>.*?</style>", head, re.S | re.I))
    styles = re.sub(r"(?i)@import[^;]*;|url\([^)]*\)", "", styles)
    title = html.unescape(re.search(r"<title>(.*?)</title>", head, re.S).group(1)) if "<title>" in head else ""
    clean = nh3.clean(
        body,
        tags=nh3.ALLOWED_TAGS - {"map", "area"},
        clean_content_tags={"script", "style", "textarea", "noscript"},
        attributes={
            **nh3.ALLOWED_ATTRIBUTES,
            "*": {"class", "id", "title", "lang", "dir"},
            "a": {"href"},
            "img": {"src", "alt", "width", "height"},
        },
        attribute_filter=_safe_url,
        url_schemes={"http", "https", "data"},
    )
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        f"<title>{html.escape(title)}</title>\n{styles}\n</head>\n"
        f'<body class="jp-Notebook">\n{clean}\n</body>\n</html>\n'
    )


def leaked_lines(text: str, secret: list[str]) -> list[str]:
    """The ``secret`` lines that appear in ``text``, as they are or HTML-escaped."""
    variants = lambda s: {s, html.escape(s), html.escape(s, quote=False)}  # noqa: E731
    return [s for s in secret if any(v in text for v in variants(s))]


def feedback(
    course: Course, lesson: str, *, students: Iterable[str] | None = None, progress: bool = True
) -> ClassReport:
    """nbgrader's HTML feedback in ``feedback/<student>/<lesson>/``, hidden tests removed."""
    start = time.perf_counter()
    cfg = class_config(course)
    cfg.lesson_notebooks(lesson)
    secret = hidden_lines(course, lesson)
    found = sorted(p.parent.name for p in cfg.autograded.glob(f"*/{lesson}") if p.is_dir())
    names = list(dict.fromkeys(students)) if students else found
    report = ClassReport("feedback", lesson)
    if not names:
        raise ValueError(
            f"no autograded submissions of {lesson} in {cfg.autograded}; "
            "run `gptcore class autograde` first"
        )
    bar = progress_bar(len(names), f"feedback {lesson}", progress)
    with nbgrader_api(**cfg.gradebook) as (api, course_dir):
        for student in names:
            t0 = time.perf_counter()
            result = StudentResult(student, lesson, "ok")
            report.results.append(result)
            try:
                _feedback_one(api, course_dir, cfg, lesson, student, secret, result)
            except Exception as e:
                result.status, result.message = "error", f"{type(e).__name__}: {e}"
            result.seconds = time.perf_counter() - t0
            bar.update(1)
    bar.close()
    report.seconds = time.perf_counter() - start
    report.notes.append(f"feedback is in {cfg.feedback}; hidden tests are not shown")
    return report


def _feedback_one(
    api: Any,
    course_dir: Path,
    cfg: ClassConfig,
    lesson: str,
    student: str,
    secret: list[str],
    result: StudentResult,
) -> None:
    src = cfg.autograded / student / lesson
    # Only the lesson's notebooks: others a student left in the folder were not graded.
    expected = set(cfg.lesson_notebooks(lesson))
    found = sorted(src.glob("*.ipynb")) if src.is_dir() else []
    notebooks = [p for p in found if p.stem in expected and is_regular(p)]
    if not notebooks:
        result.status, result.message = "missing", "no autograded notebook (not graded?)"
        return
    work = course_dir / "autograded" / student / lesson
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if is_regular(src / "timestamp.txt"):
        shutil.copyfile(src / "timestamp.txt", work / "timestamp.txt")
    for nb in notebooks:
        data = _strip_hidden(_inert_outputs(json.loads(nb.read_text(encoding="utf-8"))), secret)
        (work / nb.name).write_text(json.dumps(data), encoding="utf-8")
    answer = api.generate_feedback(lesson, student, force=True)
    if not answer.get("success"):
        log = (answer.get("error") or answer.get("log") or "").strip().splitlines()
        result.status = "error"
        result.message = "nbgrader could not render feedback: " + (log[-1] if log else "no log")
        return
    made = course_dir / "feedback" / student / lesson
    for page in made.rglob("*.html"):
        page.write_text(sanitize_page(page.read_text(encoding="utf-8")), encoding="utf-8")
    leaked = {
        p.name: leaked_lines(p.read_text(encoding="utf-8", errors="replace"), secret)
        for p in made.rglob("*")
        if p.is_file()
    }
    if any(leaked.values()):
        result.status = "error"
        result.message = "feedback withheld: hidden test text would have been shown"
        return
    dest = cfg.feedback / student / lesson
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(made, dest)
    result.message = ", ".join(sorted(p.name for p in dest.glob("*.html")))
