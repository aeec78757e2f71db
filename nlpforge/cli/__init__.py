"""The nlpforge command line (click). Commands are imported only when they run."""
