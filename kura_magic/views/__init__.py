"""How runs, comparisons and the history look: plain strings in, text or HTML out. No
IPython: the data classes' `_repr_html_` import these lazily, as pandas does."""
