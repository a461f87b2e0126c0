"""Tuneloop's closed vocabularies: every layer (feedback_db, training, webapp, app) imports them from here.

A value that is stored, validated or offered as a choice in more than one place is spelt once, below. The store
checks incoming values against these tuples; the CLIs and the UI offer them as choices.
"""

from __future__ import annotations

# who may do what (webapp.auth builds its permission groups from these)
ADMIN, REVIEWER, VIEWER = "admin", "reviewer", "viewer"
ROLES = (ADMIN, REVIEWER, VIEWER)

# chat message roles (TRL conversational format)
MESSAGE_ROLES = ("system", "user", "assistant")

SPLITS = ("train", "heldout")

# review queue modes and what a pairwise judgment can say
REVIEW_MODES = ("single", "pairwise", "ranking")
WINNERS = ("a", "b", "tie", "both_bad")
NO_WINNER = ("tie", "both_bad")  # judgments that prefer neither answer

# training stages a round runs, in the order a round may chain them; the policy stages produce servable models
STAGES = ("sft", "reward", "dpo", "kto", "online_rl")
POLICY_STAGES = ("sft", "dpo", "kto", "online_rl")
RL_STAGES = ("reward", "dpo", "kto", "online_rl")  # stages trained on preference/label feedback
# how a model version was made: a stage, or an adapter trained through the SDK
METHODS = (*STAGES, "sdk")
TECHNIQUES = ("lora", "full", "freeze")

# where feedback came from: review queue, chat arena, REST API; chat thumbs. Viewers' chat thumbs (viewer_chat) and
# arena votes (viewer_arena) stay out of training unless an admin includes viewers' chat feedback
COMPARISON_SOURCES = ("review", "arena", "viewer_arena", "api")
RATING_SOURCES = ("review", "api", "chat", "viewer_chat")

# kinds of file feedback_db.importers reads
IMPORT_KINDS = ("prompts", "demonstrations", "preferences", "unpaired")

# review form
CRITERION_KINDS = ("scale", "flag")  # 1–5, or yes (1) / no (0)
JUDGMENT_TABLES = ("ratings", "comparisons", "rankings")  # what criteria answers and undo attach to

WEBHOOK_EVENTS = ("round_finished", "round_failed", "gate_verdict", "promotion", "queue_empty")

VERSION_STATUSES = ("candidate", "active", "archived", "rejected")
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
FINAL_RUN_STATUSES = ("succeeded", "failed", "cancelled", "interrupted")
