"""The notebook layer: the magics, the panel and the HTML views.

This is the only part of kura_magic that imports IPython or ipywidgets (the magics
and the panel do; `views` is plain HTML text, so the core's `_repr_html_` methods
can use it). Nothing is imported here: `%load_ext kura_magic` imports `magics`.
"""
