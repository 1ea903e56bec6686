"""KVKK and İYS rules: business days, the retention policy, İYS records and the notice facts."""
