"""What a run reads: conversations (`loaders`), prompt templates (`templates`), response
schemas (`schemas`) and the shipped sample conversations (`samples`)."""
