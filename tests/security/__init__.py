"""The attack suite (issue 11): each test is a hostile process trying one attack on a booted
system; each asserts the attack is refused while the honest tasks keep working."""
