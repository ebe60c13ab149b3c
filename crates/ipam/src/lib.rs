//! IP address management: pools, blocks, block affinities, handles, reservations, allocation, release, check.
