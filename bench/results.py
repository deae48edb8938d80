"""Shared by the bench scripts: publish a result table into bench/RESULTS.md."""

import re

RESULTS = "bench/RESULTS.md"


def publish(section, text):
    """Print `text` and put it between the `<!-- section:begin/end -->` markers."""
    print(text)
    doc = open(RESULTS).read()
    pattern = rf"(<!-- {section}:begin -->\n).*?(<!-- {section}:end -->)"
    doc, found = re.subn(pattern, lambda m: m.group(1) + text + "\n" + m.group(2), doc, flags=re.S)
    if found != 1:
        raise SystemExit(f"{RESULTS}: no '{section}' markers to write the table between")
    open(RESULTS, "w").write(doc)
