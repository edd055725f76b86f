//! The iomodels load generator: arrives with the load generator issue.
