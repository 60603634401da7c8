"""Running points: the runner (what runs, in which order, resume), the point loop, executors
(this process, Ray tasks) and the merging of shards' run directories."""
