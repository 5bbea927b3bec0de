"""The audit trail: who minted a token for whom, and every operator action."""
