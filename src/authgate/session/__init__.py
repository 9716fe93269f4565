"""Server-side state: sessions, pre-login state and the replay cache over one key-value store."""
