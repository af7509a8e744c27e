package Test::ApiSessions;

# Helpers shared by the delivery tests: the status handler's counters, the
# per-worker sequence check, and a background load generator.

###############################################################################

use warnings;
use strict;

use Exporter qw/ import /;
use JSON::PP;
use POSIX qw/ WNOHANG /;
use Time::HiRes qw/ sleep time /;

use Test::Nginx;

our @EXPORT = qw/
	status_json wait_status identity sequences load_start load_stop wait_log
/;

###############################################################################

# Counters from an api_sessions_status location, decoded.
sub status_json {
	my ($uri, %extra) = @_;

	my $r = http_get($uri, %extra) // return undef;
	return undef unless http_status($r) == 200;
	return JSON::PP->new->decode(http_content($r));
}

# Polls the status until $cond->($status) holds; returns the last status.
sub wait_status {
	my ($uri, $cond, %opts) = @_;

	my $deadline = time() + patience($opts{timeout} // 15);
	my $s;

	while (time() < $deadline) {
		$s = status_json($uri, %opts);
		return $s if $s && $cond->($s);
		sleep(0.05);
	}

	return $s;
}

# The exporter's messages reach error.log through the worker's one-second
# timer: poll for them.
sub wait_log {
	my ($t, $re, %opts) = @_;

	my $deadline = time() + patience($opts{timeout} // 5);

	while (time() < $deadline) {
		return 1 if $t->read_file('error.log') =~ $re;
		sleep(0.1);
	}

	return 0;
}

# captured = exported + dropped + queued + spooled
sub identity {
	my ($c) = @_;
	return $c->{captured}
		== $c->{exported} + $c->{dropped} + $c->{queued} + $c->{spooled};
}

# Per pid: the number of distinct sequence numbers, the highest one, and
# how many numbers are missing below it or were seen twice.
sub sequences {
	my (@records) = @_;

	my %seen;
	$seen{$_->{pid}}{$_->{seq}}++ for @records;

	my %summary;

	for my $pid (keys %seen) {
		my $s = $seen{$pid};
		my ($max) = sort { $b <=> $a } keys %$s;
		$summary{$pid} = {
			distinct => scalar keys %$s,
			max => $max,
			missing => scalar(grep { !$s->{$_} } 1 .. $max),
			duplicated => scalar(grep { $_ > 1 } values %$s),
		};
	}

	return \%summary;
}

# Forks a client that sends GET $uri in a loop over keep-alive-less
# connections until load_stop(); load_stop() returns how many requests got
# an answer and how many did not.  The client is stopped through a file,
# not a signal: a signal would cut a request off mid-read and count a
# request the server answered as failed.
sub load_start {
	my ($uri, %extra) = @_;

	my $file = ($extra{dir} // '/tmp') . "/load.$$." . int(rand(1e9));

	my $pid = fork() // die "fork: $!\n";

	if ($pid == 0) {
		my ($ok, $failed) = (0, 0);

		until (-e "$file.stop") {
			my $r = http_get($uri, port => $extra{port}, timeout => 5);
			if (defined $r && http_status($r) == 200) { $ok++ } else { $failed++ }
			sleep($extra{pause}) if $extra{pause};
		}

		open my $fh, '>', $file or POSIX::_exit(1);
		print $fh "$ok $failed\n";
		close $fh;
		POSIX::_exit(0);
	}

	return { pid => $pid, file => $file };
}

sub load_stop {
	my ($load) = @_;

	open my $stop, '>', "$load->{file}.stop" or die "load_stop: $!\n";
	close $stop;
	waitpid($load->{pid}, 0);

	open my $fh, '<', $load->{file} or die "load generator left no result\n";
	my ($ok, $failed) = split ' ', scalar <$fh>;
	close $fh;
	unlink $load->{file}, "$load->{file}.stop";

	return ($ok, $failed);
}

###############################################################################

1;

###############################################################################
