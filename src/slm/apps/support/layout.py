"""What an assistant bundle holds, by name (shared by the build and the run-time code)."""

TASK = "support_assistant"
ASSISTANT_FILE = "assistant.json"  # templates, language profile, out-of-scope settings, FAQ threshold
SCOPE_FILE = "scope.safetensors"  # intent centroids and the shared precision matrix
KNOWLEDGE_DIR = "knowledge"  # entries, vector index, BM25 index
INTENT_BUNDLE_DIR = "intent_bundle"  # the slm intent bundle (PyTorch weights, n-gram baseline, report)
