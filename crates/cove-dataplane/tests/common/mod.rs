pub mod two_hosts;
