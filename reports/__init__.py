"""The papers' published numbers, `published.csv` (see README.md here): shipped as package data so that `bench report`
and `bench generators` find them from a wheel install as well as from a checkout (`bench.report.published`)."""
