"""report.html and the comparison tables: figures (what is reported and how), images, charts,
html (the self-contained page), tables (the terminal comparison). This face re-exports their public names."""
from talkctl.report.charts import (  # noqa: F401
    PALETTE,
    nice_ticks,
    svg_line_chart,
)
from talkctl.report.figures import (  # noqa: F401
    STAGE_NAMES,
    UNAVAILABLE_REASON,
    format_figure,
    format_seconds,
)
from talkctl.report.html import (  # noqa: F401
    render_html,
    write_report,
)
from talkctl.report.images import (  # noqa: F401
    INFERNO_LUT,
    error_heatmap,
    img_tag,
    png_bytes,
)
from talkctl.report.tables import (  # noqa: F401
    COMPARE_KEYS,
    STAGE_KEYS,
    STAGE_MEMORY_KEYS,
    comparison_markdown,
    comparison_table,
)
