"""The auditor's work as application verbs: evidence packages, access records, the audio index.

They take a session and typed arguments and return typed values; the pages in ivr/web/auditor/
parse the request, call one of them and render."""
