"""Local fake servers that speak each vendor's wire protocol, scripted per test."""
