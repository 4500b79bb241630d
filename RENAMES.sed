# Session's members moved to the collaborator that owns them (GNU sed -E; run as: sed -E -i -f RENAMES.sed FILES).
# Matches any receiver whose name ends in "session" (session., self.session., http.session., ...).
# The order matters: session.queue() before session.run_queue.
s/session\.queue\(\)/session.queue.queued()/g
s/session\.run_queue\b/session.queue/g
# the document (nodeflow.document.Document)
s/session\.(graph|version|dirty|path|can_undo|can_redo|autosave_delay|autosave_folder|autosave|autosaves|undo|redo|replace|edit|edits|save|open|load|save_group|notice)\b/session.document.\1/g
# the run queue (nodeflow.runqueue.RunQueue)
s/session\.(running|last_report|last_error|run_id|run|submit|cancel|stop|wait)\b/session.queue.\1/g
# sweeps (nodeflow.sweep.Sweeps)
s/session\.submit_sweep\b/session.sweeps.submit/g
s/session\.sweep\b/session.sweeps.get/g
s/session\.cancel_sweep\b/session.sweeps.cancel/g
# costs (nodeflow.estimates.Estimates)
s/session\.estimate\b/session.estimator.estimate/g
s/session\.price\b/session.estimator.price/g
s/session\.estimates\b/session.estimator.prices/g
# a finished node's details (nodeflow.results.Results)
s/session\.node_tables\b/session.results.tables/g
s/allows\(([a-z_.]*session), "cell_gallery"\)/allows(\1, "results.cell_gallery")/g
s/session\.(cell_gallery|drawn_cell_gallery|overlay_folder)\b/session.results.\1/g
# the canvas's messages name the collaborator's method (nodeflow.access follows dotted names)
s/Message\("([a-z_]+)", "(edits|save_group|undo|redo|save)"\)/Message("\1", "document.\2")/g
s/Message\("([a-z_]+)", "submit"\)/Message("\1", "queue.submit")/g
# SweepNotFound lives with the sweeps
s/^from nodeflow\.session import EditError, SweepNotFound$/from nodeflow.session import EditError\nfrom nodeflow.sweep import SweepNotFound/
