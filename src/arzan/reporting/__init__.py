"""The pieces behind `arzan.report.build_report`: reading run folders, plots, HTML, Markdown.

Split by concern so each stays readable in one sitting; `arzan.report` is the public door.
"""
