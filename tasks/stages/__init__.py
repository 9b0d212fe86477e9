"""The stages, one module each (collect, clean, dedupe, filter, score, align, documents, split), and the
interfaces they implement: Stage and RowStage (stage.py), rules that measure then decide (rules.py)."""
