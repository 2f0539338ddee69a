"""Rewrite the key reference in docs/config.md from the declarations (run: make docs)."""

from __future__ import annotations

from pathlib import Path

from fedbus.run import reference_markdown

START, END = "<!-- reference:start -->", "<!-- reference:end -->"


def main() -> None:
    path = Path(__file__).with_name("config.md")
    text = path.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{reference_markdown().strip()}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    main()
