"""The colours of every view, defined once: the status badges, the stacked bar, a panel's
edge, the tint of differing rows. The live widget gets them from here too (`run_widget`)."""

FRESH = "#43a047"
CACHED = "#1e88e5"
FAILED = "#e53935"
WARNING = "#fb8c00"
QUIET_GREY = "#616161"
NEUTRAL = "#757575"
TRACK = "#e0e0e0"  # the progress bar's empty part, where the theme gives none

BADGE_COLOURS = {"fresh": FRESH, "cached": CACHED, "error": FAILED, "skipped": NEUTRAL,
                 "unfinished": WARNING, "pending": CACHED}


# The stacked progress bar's parts: the count of RunStats each shows, and its colour.
BAR_PARTS = (("cached", CACHED), ("fresh", FRESH), ("errors", FAILED))


# A panel's edge colour: failed, with errors or skips, or fine.
EDGES = {"failed": FAILED, "warning": WARNING, "ok": FRESH}


RUNNING_EDGE = CACHED  # a live panel: a run going (its fallback HTML), the cache panel

# What the live widgets' CSS uses, sent to the browser as `--kura-colour-<name>` variables.
CSS_COLOURS = {"running": RUNNING_EDGE, **EDGES, "quiet": QUIET_GREY, "track": TRACK}


# Rows whose outputs differ: a tint of the theme's warning colour over its background, so it
# reads in light and dark themes (the rgba is for browsers without color-mix).
DIFFERS_CSS = (
    ".kura-comparison tr.kura-differs>td{background:rgba(255,152,0,.16)!important;"
    "background:color-mix(in srgb,var(--jp-warn-color1,#ff9800) 16%,var(--jp-layout-color0,#fff))!important}"
    # removed words red, added green: the theme's own error and success colours, light or dark
    ".kura-comparison del.kura-removed{color:var(--jp-error-color1,#d32f2f);"
    "background:color-mix(in srgb,var(--jp-error-color1,#d32f2f) 14%,transparent)}"
    ".kura-comparison ins.kura-added{color:var(--jp-success-color1,#388e3c);text-decoration:none;"
    "background:color-mix(in srgb,var(--jp-success-color1,#388e3c) 14%,transparent)}"
)
