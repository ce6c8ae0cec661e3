"""Parts shared by Herald's SMTP servers (inbound and submission): bare line-ending detection,
group commit, bounded sessions."""
