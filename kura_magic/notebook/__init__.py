"""The notebook layer: the magics, the panels and the live run widget.

The only part of kura_magic that imports IPython, ipywidgets or traitlets (the HTML and
text they show are `kura_magic.views`, which the core's `_repr_html_` can use). Nothing is
imported here: `%load_ext kura_magic` imports `magics`.
"""
