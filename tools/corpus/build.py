#!/usr/bin/env python3
"""Build the reference English corpus for the MeKi reference trainer from Debian packages.

One command:  python3 tools/corpus/build.py [--out target/corpus]

Sources (Debian bookworm, all DFSG-free, fetched with `apt-get download`):
  bible-kjv-text + bible-kjv  King James Bible (decoded with the package's own `bible` tool)
  dict-gcide                  Collaborative International Dictionary of English (Webster 1913 + WordNet)
  dict-foldoc                 Free On-line Dictionary of Computing
  jargon-text                 The Jargon File
  fortunes, fortunes-min      fortune cookies (quotes, literature, riddles; ascii-art skipped)
  perl-doc                    Perl's POD manuals (prose + some code)
  python3.11-doc              Python 3.11 HTML documentation (tags stripped)

Every source is cut into documents (a Bible chapter, a run of dictionary entries, a fortune,
a manual section, a doc page), long documents are split at paragraph boundaries into pieces
of at most MAX_DOC_CHARS, all documents are shuffled with a fixed seed and split 98/2 by
document into train.txt / valid.txt (documents separated by one blank line). A manifest.json
records package versions, sizes and sha256 of every output.
Needs only Python 3 stdlib, apt-get and dpkg-deb. Deterministic given the same .deb files.
"""
import argparse
import glob
import gzip
import hashlib
import html.parser
import json
import os
import random
import re
import subprocess
import sys

PACKAGES = [
    "bible-kjv-text", "bible-kjv", "dict-gcide", "dict-foldoc", "jargon-text",
    "fortunes", "fortunes-min", "perl-doc", "python3.11-doc",
]
SEED = 1234
VALID_FRACTION = 0.02
MAX_DOC_CHARS = 6000
DICT_GROUP_CHARS = 3000  # consecutive dictionary entries are grouped into documents of ~this size


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def fetch(out):
    debs = os.path.join(out, "debs")
    x = os.path.join(out, "x")
    os.makedirs(debs, exist_ok=True)
    have = {os.path.basename(p).split("_")[0] for p in glob.glob(os.path.join(debs, "*.deb"))}
    missing = [p for p in PACKAGES if p not in have]
    if missing:
        sh(["apt-get", "download", *missing], cwd=debs)
    versions = {}
    for p in PACKAGES:
        [deb] = glob.glob(os.path.join(debs, p + "_*.deb"))
        versions[p] = {"deb": os.path.basename(deb), "sha256": sha256_file(deb)}
        dst = os.path.join(x, p)
        if not os.path.isdir(dst):
            os.makedirs(dst)
            sh(["dpkg-deb", "-x", deb, dst])
    return x, versions


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def norm_ws(s):
    """Collapse runs of spaces/tabs, keep newlines."""
    s = s.replace("\r", "").replace("\t", " ")
    s = re.sub(r"[ \u00a0]+", " ", s)
    return s


def paragraphs_to_text(paras):
    return "\n\n".join(p for p in (p.strip() for p in paras) if p)


def reflow(block):
    """Join hard-wrapped lines of one paragraph into one line."""
    return " ".join(l.strip() for l in block.split("\n") if l.strip())


def split_long(doc):
    """Split a document at paragraph boundaries into pieces of at most MAX_DOC_CHARS."""
    if len(doc) <= MAX_DOC_CHARS:
        return [doc]
    out, cur, n = [], [], 0
    for p in doc.split("\n\n"):
        if cur and n + len(p) > MAX_DOC_CHARS:
            out.append("\n\n".join(cur))
            cur, n = [], 0
        cur.append(p)
        n += len(p) + 2
    if cur:
        out.append("\n\n".join(cur))
    return out


def group(items, size):
    """Concatenate consecutive short items (dictionary entries) into documents of ~size chars."""
    out, cur, n = [], [], 0
    for it in items:
        cur.append(it)
        n += len(it)
        if n >= size:
            out.append("\n\n".join(cur))
            cur, n = [], 0
    if cur:
        out.append("\n\n".join(cur))
    return out


# ---------------------------------------------------------------- sources
def src_bible(x):
    exe = os.path.join(x, "bible-kjv/usr/bin/bible")
    datadir = os.path.join(x, "bible-kjv-text/usr/lib")
    r = subprocess.run([exe, "-f", "-p", datadir, "-d", "bible.data", "gen1:1-rev22:21"],
                       stdin=subprocess.DEVNULL, capture_output=True, check=True)
    text = r.stdout.decode("latin-1")
    # `-f`: one verse per line, "Ge1:30 And to every beast ...". One document per chapter.
    chapters = {}
    for line in text.split("\n"):
        m = re.match(r"(\w+?)(\d+):(\d+) (.*)", line)
        if m:
            chapters.setdefault((m.group(1), m.group(2)), []).append(m.group(4).strip())
    return [" ".join(v) for v in chapters.values()]


def dict_entries(path):
    """dictd .dict.dz: entries start at column 0, continuation lines are indented."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    entries, cur = [], []
    for line in text.split("\n"):
        if line and not line[0].isspace():
            if cur:
                entries.append("\n".join(cur))
            cur = [line]
        else:
            cur.append(line)
    if cur:
        entries.append("\n".join(cur))
    return [e for e in entries if not e.startswith("00-database") and not e.startswith("00database")]


def clean_dict_entry(e, gcide):
    lines = []
    for l in e.split("\n"):
        s = l.strip()
        # source tags on their own line: [1913 Webster], [WordNet 1.5], [PJC], (2007-07-16) dates
        if re.fullmatch(r"\[[^\]]{1,40}\]", s) or re.fullmatch(r"\(\d{4}-\d{2}-\d{2}\)", s):
            l = ""
        lines.append(l)
    e = "\n".join(lines)
    if gcide:
        e = re.sub(r" ?\\[^\\\n]{0,80}\\", "", e)  # pronunciation \Af*fect"\
        e = re.sub(r"<--.*?-->", "", e, flags=re.S)
    e = e.replace("{", "").replace("}", "")
    paras = [reflow(p) for p in re.split(r"\n\s*\n", e)]
    return paragraphs_to_text(paras)


def src_gcide(x):
    es = dict_entries(os.path.join(x, "dict-gcide/usr/share/dictd/gcide.dict.dz"))
    es = [c for c in (clean_dict_entry(e, True) for e in es) if len(c) > 20]
    # drop the GPL/front-matter blocks ("Begin file 1 of 26" etc.)
    es = [e for e in es if "Begin file" not in e and "* * * *" not in e]
    return group(es, DICT_GROUP_CHARS)


def src_foldoc(x):
    es = dict_entries(os.path.join(x, "dict-foldoc/usr/share/dictd/foldoc.dict.dz"))
    es = [c for c in (clean_dict_entry(e, False) for e in es) if len(c) > 20]
    return group(es, DICT_GROUP_CHARS)


def src_jargon(x):
    with gzip.open(os.path.join(x, "jargon-text/usr/share/doc/jargon-text/jargon.txt.gz"),
                   "rt", encoding="latin-1") as f:
        text = f.read()
    paras = [reflow(p) for p in re.split(r"\n\s*\n", text)]
    # The table of contents is a long run of one-line headword paragraphs; drop very short ones.
    paras = [p for p in paras if len(p) > 40]
    return group(paras, DICT_GROUP_CHARS)


def src_fortunes(x):
    docs = []
    files = sorted(glob.glob(os.path.join(x, "fortunes*/usr/share/games/fortunes/*")))
    for p in files:
        if os.path.splitext(p)[1] in (".dat", ".u8") or os.path.basename(p) in ("ascii-art", "art"):
            continue
        with open(p, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for fort in re.split(r"\n%\n", text):
            fort = norm_ws(fort).strip("\n%")
            lines = [l.rstrip() for l in fort.split("\n")]
            fort = "\n".join(l.strip() if not l.strip().startswith("--") else l.strip() for l in lines).strip()
            if len(fort) > 10:
                docs.append(fort)
    return docs


POD_CODE = re.compile(r"[A-Z]<<+\s+(.*?)\s+>>+|[A-Z]<([^<>]*)>", re.S)


def pod_inline(s):
    # B<bold> C<code> I<it> L<link|target> E<gt> F<file> S<..> X<index> Z<>; repeat for nesting
    for _ in range(4):
        def rep(m):
            tag = m.group(0)[0]
            inner = m.group(1) if m.group(1) is not None else m.group(2)
            if tag == "E":
                return {"gt": ">", "lt": "<", "verbar": "|", "sol": "/"}.get(inner, "")
            if tag in "XZ":
                return ""
            if tag == "L":
                return inner.split("|")[0]
            return inner
        s2 = POD_CODE.sub(rep, s)
        if s2 == s:
            break
        s = s2
    return s


def src_perldoc(x):
    docs = []
    for p in sorted(glob.glob(os.path.join(x, "perl-doc/usr/share/perl/*/pod/*.pod"))):
        with open(p, encoding="utf-8", errors="replace") as f:
            text = f.read()
        sections, cur = [], []
        for block in re.split(r"\n\s*\n", text):
            if block.startswith("=head1") or block.startswith("=head2"):
                if cur:
                    sections.append(cur)
                cur = [pod_inline(re.sub(r"^=head\d\s*", "", block)).strip()]
            elif block.startswith("=item"):
                cur.append(pod_inline(re.sub(r"^=item\s*", "", block)).strip())
            elif block.startswith("="):
                continue
            elif block[:1].isspace():  # verbatim code: keep as is
                cur.append(block.rstrip())
            else:
                cur.append(reflow(pod_inline(block)))
        if cur:
            sections.append(cur)
        for sec in sections:
            d = "\n\n".join(b for b in sec if b.strip())
            if len(d) > 80:
                docs.append(d)
    return docs


class HTMLText(html.parser.HTMLParser):
    """Collect the text of <div role="main"> (Sphinx body), with paragraph breaks at block tags."""
    BLOCK = {"p", "div", "section", "h1", "h2", "h3", "h4", "h5", "li", "dt", "dd", "pre", "tr",
             "table", "blockquote", "br", "dl", "ul", "ol"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0  # >0 while inside the main body div
        self.skip = 0
        self.pre = 0
        self.out = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if self.depth:
            if tag == "div":
                self.depth += 1
        elif tag == "div" and a.get("role") == "main":
            self.depth = 1
            return
        if not self.depth:
            return
        if tag in ("script", "style") or (tag == "a" and "headerlink" in (a.get("class") or "")):
            self.skip += 1
        if tag == "pre":
            self.pre += 1
        if tag in self.BLOCK:
            self.out.append("\n\n")

    def handle_endtag(self, tag):
        if not self.depth:
            return
        if tag == "div":
            self.depth -= 1
        if tag in ("script", "style") or (tag == "a" and self.skip):
            self.skip = max(0, self.skip - 1)
        if tag == "pre":
            self.pre -= 1
        if tag in self.BLOCK:
            self.out.append("\n\n")

    def handle_data(self, data):
        if self.depth and not self.skip:
            self.out.append(data if self.pre else data.replace("\n", " "))


def src_pydoc(x):
    docs = []
    root = os.path.join(x, "python3.11-doc/usr/share/doc/python3.11/html")
    for p in sorted(glob.glob(os.path.join(root, "**/*.html"), recursive=True)):
        rel = os.path.relpath(p, root)
        if rel.startswith(("_", "genindex", "py-modindex", "search")) or "whatsnew/changelog" in rel:
            continue
        with open(p, encoding="utf-8", errors="replace") as f:
            h = HTMLText()
            h.feed(f.read())
        text = norm_ws("".join(h.out))
        paras = [q.strip() for q in re.split(r"\n\s*\n", text)]
        paras = [q for q in paras if q and q != "¶"]
        d = "\n\n".join(paras)
        if len(d) > 200:
            docs.append(d)
    return docs


SOURCES = [
    ("bible-kjv", src_bible), ("gcide", src_gcide), ("foldoc", src_foldoc), ("jargon", src_jargon),
    ("fortunes", src_fortunes), ("perl-doc", src_perldoc), ("python-doc", src_pydoc),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="target/corpus")
    args = ap.parse_args()
    x, versions = fetch(args.out)
    docs, per_source = [], {}
    for name, fn in SOURCES:
        ds = []
        for d in fn(x):
            d = norm_ws(d).strip()
            # drop NULs / control chars other than newline
            d = re.sub(r"[\x00-\x09\x0b-\x1f\x7f]", "", d)
            ds.extend(s for s in split_long(d) if len(s) > 10)
        per_source[name] = {"docs": len(ds), "chars": sum(len(d) for d in ds)}
        print(f"{name:12s} {len(ds):7d} docs {per_source[name]['chars'] / 1e6:7.2f} M chars", file=sys.stderr)
        docs.extend(ds)
    rng = random.Random(SEED)
    rng.shuffle(docs)
    n_valid = int(round(len(docs) * VALID_FRACTION))
    valid, train = docs[:n_valid], docs[n_valid:]
    manifest = {"seed": SEED, "valid_fraction": VALID_FRACTION, "max_doc_chars": MAX_DOC_CHARS,
                "document_separator": "\\n\\n (one blank line)", "packages": versions,
                "sources": per_source, "files": {}}
    for fname, part in (("train.txt", train), ("valid.txt", valid)):
        path = os.path.join(args.out, fname)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n\n".join(part) + "\n")
        manifest["files"][fname] = {"docs": len(part), "bytes": os.path.getsize(path), "sha256": sha256_file(path)}
        print(f"{fname}: {len(part)} docs, {os.path.getsize(path) / 1e6:.2f} MB", file=sys.stderr)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    # Documents list (for the tokenizer step, which inserts <|endoftext|> between documents).
    with open(os.path.join(args.out, "train_docs.jsonl"), "w", encoding="utf-8") as f:
        for d in train:
            f.write(json.dumps(d) + "\n")


if __name__ == "__main__":
    main()
