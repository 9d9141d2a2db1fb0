//! The load generator: workers that verify every echoed byte, HDR histograms and reports.
