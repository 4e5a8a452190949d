"""The admission server: gunicorn over TLS in front of Flask routes, the typed AdmissionReview in and
out, the per-request record (log line and metrics), and the policy state with its hot reload."""
