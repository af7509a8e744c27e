package Test::Receiver;

# HTTP/1.1 receiver for exporter delivery tests.  A forked child listens on
# a loopback port and forks once more per connection, so a slow or
# blackholed connection never holds up the others.  The test switches its
# behaviour with mode(); every request, and every body answered with 2xx,
# is logged to a file the test reads back.

###############################################################################

use warnings;
use strict;

use Fcntl qw/ :flock /;
use File::Path qw/ make_path rmtree /;
use File::Temp qw/ tempdir /;
use IO::Select;
use IO::Socket::INET;
use IO::Uncompress::Gunzip qw/ gunzip $GunzipError /;
use JSON::PP;
use POSIX qw/ WNOHANG /;
use Socket qw/ MSG_DONTWAIT MSG_PEEK /;
use Time::HiRes qw/ sleep time /;

###############################################################################

# Bodies are arbitrary bytes; latin1 keeps them byte for byte in the log.
my $JSON = JSON::PP->new->latin1->canonical;

my %REASONS = (
	200 => 'OK',
	202 => 'Accepted',
	204 => 'No Content',
	400 => 'Bad Request',
	401 => 'Unauthorized',
	413 => 'Payload Too Large',
	429 => 'Too Many Requests',
	500 => 'Internal Server Error',
	502 => 'Bad Gateway',
	503 => 'Service Unavailable',
);

my $POLL = 0.05;
my $ACK_TIMEOUT = 5;

# As in Test::Nginx: every timeout stretched for a slow nginx.
my $SLOWDOWN = $ENV{TEST_NGINX_SLOWDOWN} || 1;

###############################################################################

sub new {
	my ($class, %opts) = @_;

	my $port = $opts{port} // die "Test::Receiver->new(): no port\n";

	my $self = bless {
		port => $port,
		parent => $$,
		gen => 0,
	}, $class;

	if (defined $opts{dir}) {
		make_path($opts{dir});
		$self->{dir} = $opts{dir};
		$self->{keep} = 1;

	} else {
		$self->{dir} = tempdir('receiver-XXXXXXXXXX', TMPDIR => 1);
	}

	$self->_write_json('control',
		{ gen => 0, mode => 'respond', status => 200, slow => 0 });

	# bound before new() returns: the first connection must not be refused
	my $listener = _listen($port)
		or die "Test::Receiver: can't listen on 127.0.0.1:$port: $!\n";

	my $pid = fork() // die "Can't fork: $!\n";

	if ($pid == 0) {
		eval { $self->_serve($listener); };
		POSIX::_exit(0);
	}

	close $listener;
	$self->{child} = $pid;

	return $self;
}

sub DESTROY {
	my ($self) = @_;

	return if $self->{parent} != $$;

	local $?;
	$self->stop();

	rmtree($self->{dir}) unless $self->{keep} || $ENV{TEST_NGINX_LEAVE};
}

sub port {
	my ($self) = @_;
	return $self->{port};
}

sub url {
	my ($self, $path) = @_;
	return "http://127.0.0.1:$self->{port}" . ($path // '/');
}

# mode('ok'), mode('down'), mode('blackhole'),
# mode(status => 500), mode(slow => 2), mode(status => 429, slow => 1).
# Returns once the receiver acts on it: after mode('down') a connection is
# refused.
sub mode {
	my ($self, @args) = @_;

	my %args = @args == 1 ? (mode => $args[0]) : @args;
	my %control;

	if (defined(my $mode = delete $args{mode})) {
		die "Test::Receiver: unknown mode \"$mode\"\n"
			unless $mode =~ /^(?:ok|down|blackhole)$/;

		%control = $mode eq 'ok'
			? (mode => 'respond', status => 200, slow => 0)
			: (mode => $mode);

	} else {
		%control = (
			mode => 'respond',
			status => delete $args{status} // 200,
			slow => delete $args{slow} // 0,
		);

		die "Test::Receiver: bad status \"$control{status}\"\n"
			unless $control{status} =~ /^[2-5]\d\d$/;
	}

	die "Test::Receiver: unknown mode parameter \""
		. join('", "', sort keys %args) . "\"\n" if %args;

	$control{gen} = ++$self->{gen};
	$self->_write_json('control', \%control);

	my $deadline = time() + $ACK_TIMEOUT * $SLOWDOWN;

	while (time() < $deadline) {
		my $ack = $self->_read_json('ack');

		if ($ack && $ack->{gen} == $control{gen}) {
			die "Test::Receiver: $ack->{error}\n" if $ack->{error};
			return $self;
		}

		sleep($POLL);
	}

	die "Test::Receiver: mode change not acknowledged\n";
}

sub stop {
	my ($self) = @_;

	my $pid = delete $self->{child} or return $self;

	kill 'TERM', $pid;

	my $deadline = time() + 10;

	until (waitpid($pid, WNOHANG) == $pid) {
		if (time() > $deadline) {
			kill 'KILL', $pid;
			waitpid($pid, 0);
			last;
		}

		sleep($POLL);
	}

	return $self;
}

###############################################################################

# Every request in arrival order: method, uri, path, query, version,
# connection (same number for requests on one connection),
# headers (lower-case name => value), header_list ([name, value], ...),
# status (undef when not answered), result ("responded", "blackhole",
# "down", "aborted"), body (decoded, 2xx only), body_bytes (as received),
# chunked, content_encoding, error.
sub requests {
	my ($self) = @_;

	open my $fh, '<', "$self->{dir}/requests.log" or return ();
	flock $fh, LOCK_SH;
	binmode $fh;

	my @requests = map { $JSON->decode($_) } <$fh>;
	close $fh;

	for my $r (@requests) {
		$r->{headers} = {};

		for my $h (@{$r->{header_list}}) {
			my $name = lc $h->[0];
			$r->{headers}{$name} = defined $r->{headers}{$name}
				? "$r->{headers}{$name}, $h->[1]" : $h->[1];
		}
	}

	return @requests;
}

# NDJSON lines of all bodies answered with 2xx, in order.
sub lines {
	my ($self) = @_;

	return map { split /\n/, $_->{body} }
		grep { defined $_->{body} } $self->requests();
}

# The lines decoded; a line that is not a JSON object dies.
sub records {
	my ($self) = @_;

	my $json = JSON::PP->new->utf8;
	my @records;

	for my $l ($self->lines()) {
		my $r = eval { $json->decode($l) };
		die "Test::Receiver: invalid JSON record: $l\n"
			unless ref $r eq 'HASH';
		push @records, $r;
	}

	return @records;
}

sub wait_requests {
	my ($self, $n, %opts) = @_;
	return $self->_wait(sub { $self->requests() }, $n, %opts);
}

sub wait_lines {
	my ($self, $n, %opts) = @_;
	return $self->_wait(sub { $self->lines() }, $n, %opts);
}

sub _wait {
	my ($self, $get, $n, %opts) = @_;

	my $deadline = time() + ($opts{timeout} // 10) * $SLOWDOWN;

	while (1) {
		my @got = $get->();
		return @got if @got >= $n || time() > $deadline;
		sleep($POLL);
	}
}

###############################################################################

sub _listen {
	my ($port) = @_;

	return IO::Socket::INET->new(
		Proto => 'tcp',
		LocalAddr => "127.0.0.1:$port",
		Listen => 128,
		ReuseAddr => 1,
	);
}

sub _serve {
	my ($self, $listener) = @_;

	my $stop = 0;
	my %handlers;
	my $applied = -1;

	$SIG{TERM} = sub { $stop = 1 };
	$SIG{PIPE} = 'IGNORE';

	$self->{server} = $$;

	until ($stop || getppid() != $self->{parent}) {
		while ((my $pid = waitpid(-1, WNOHANG)) > 0) {
			delete $handlers{$pid};
		}

		my $control = $self->_control();

		if ($control->{gen} != $applied) {
			my $error;

			if ($control->{mode} eq 'down') {
				close $listener if $listener;
				undef $listener;

			} elsif (!$listener) {
				$listener = _listen($self->{port})
					or $error = "can't listen on "
						. "127.0.0.1:$self->{port}: $!";
			}

			$self->_write_json('ack',
				{ gen => $control->{gen}, error => $error });
			$applied = $control->{gen};
		}

		if (!$listener) {
			sleep($POLL);
			next;
		}

		next unless IO::Select->new($listener)->can_read($POLL);

		my $c = $listener->accept() or next;
		my $pid = fork();

		if (defined $pid && $pid == 0) {
			# a copy left open here would keep "down" from refusing
			close $listener;
			$SIG{TERM} = 'DEFAULT';
			eval { $self->_handle($c); };
			POSIX::_exit(0);
		}

		$handlers{$pid} = 1 if defined $pid;
		close $c;
	}

	kill 'TERM', keys %handlers;
	waitpid($_, 0) for keys %handlers;
}

sub _handle {
	my ($self, $c) = @_;

	my $buf = '';

	while (1) {
		my $r = $self->_read_request($c, \$buf) or return;
		my $control = $self->_control();

		my %entry = (
			time => time(),
			connection => $$,
			method => $r->{method},
			uri => $r->{uri},
			path => $r->{uri} =~ s/\?.*//sr,
			query => $r->{uri} =~ /\?(.*)/s ? $1 : undef,
			version => $r->{version},
			header_list => $r->{header_list},
			body_bytes => length $r->{body},
			chunked => $r->{chunked},
			content_encoding => $r->{headers}{'content-encoding'},
		);

		if ($control->{mode} ne 'respond') {
			$self->_log({ %entry, status => undef,
				result => $control->{mode} });

			return if $control->{mode} eq 'down';

			# no answer; the connection stays until the client goes
			1 while $self->_fill($c, \$buf, 0);
			return;
		}

		if ($control->{slow}) {
			sleep($control->{slow});

			# the client timed out: it will send the batch again
			if (_peer_closed($c)) {
				$self->_log({ %entry, status => undef,
					result => 'aborted' });
				return;
			}
		}

		my ($status, $body, $error) = ($control->{status}, $r->{body});

		my $encoding = lc($r->{headers}{'content-encoding'}
			// 'identity');

		if ($encoding eq 'gzip') {
			my $plain;

			# not Transparent: a body that is not gzip is an error
			if (gunzip(\$body => \$plain, MultiStream => 1,
				Transparent => 0))
			{
				$body = $plain;
			} else {
				$status = 400;
				$error = "gunzip: $GunzipError";
			}

		} elsif ($encoding ne 'identity') {
			$status = 400;
			$error = "unsupported encoding $encoding";
		}

		my $ok = $status >= 200 && $status < 300;
		my @lines = $ok ? split(/\n/, $body) : ();

		# logged before the reply: once the client sees 2xx, lines()
		# has the body
		$self->_log({ %entry, status => $status, result => 'responded',
			($ok ? (body => $body) : ()),
			(defined $error ? (error => $error) : ()) });

		my $connection = lc($r->{headers}{connection} // '');
		my $keepalive = $r->{version} eq '1.1'
			? $connection !~ /close/ : $connection =~ /keep-alive/;

		my $reply = $JSON->encode($ok
			? { status => 'ok', lines => scalar @lines }
			: { error => $error // "status $status" });

		my $header = "HTTP/1.1 $status "
			. ($REASONS{$status} // 'Status') . "\r\n";

		if ($keepalive) {
			$header .= "Connection: keep-alive\r\n"
				if $r->{version} eq '1.0';
		} else {
			$header .= "Connection: close\r\n";
		}

		# 204 has neither a body nor Content-Length
		if ($status == 204) {
			$reply = '';
		} else {
			$header .= "Content-Type: application/json\r\n"
				. "Content-Length: " . length($reply) . "\r\n";
		}

		_send($c, "$header\r\n$reply") or return;

		return unless $keepalive;
	}
}

sub _read_request {
	my ($self, $c, $buf) = @_;

	my $end = $self->_wait_match($c, $buf, qr/\r?\n\r?\n/, 1)
		// return undef;

	my $head = substr($$buf, 0, $end, '');
	my ($line, @fields) = split /\r?\n/, $head;

	my ($method, $uri, $version) = $line =~ m!^(\S+) (\S+) HTTP/(\d\.\d)$!
		or return undef;

	my (@list, %headers);

	for (@fields) {
		my ($name, $value) = /^([^:\s]+):[ \t]*(.*?)[ \t]*$/ or next;
		push @list, [ $name, $value ];
		$headers{lc $name} = $value;
	}

	if (lc($headers{expect} // '') eq '100-continue'
		&& $self->_control()->{mode} eq 'respond')
	{
		_send($c, "HTTP/1.1 100 Continue\r\n\r\n") or return undef;
	}

	my $body = '';
	my $chunked = ($headers{'transfer-encoding'} // '') =~ /chunked/i;

	if ($chunked) {
		while (1) {
			$end = $self->_wait_match($c, $buf,
				qr/\A[0-9a-f]+[^\r\n]*\r\n/i) // return undef;

			# the size line, extensions dropped
			my $line = substr($$buf, 0, $end, '');
			my $size = hex(($line =~ /^([0-9a-f]+)/i)[0]);
			last if $size == 0;

			$self->_wait_length($c, $buf, $size + 2)
				or return undef;

			$body .= substr($$buf, 0, $size);
			substr($$buf, 0, $size + 2, '');
		}

		# trailer fields up to an empty line
		$end = $self->_wait_match($c, $buf, qr/\A(?:[^\r\n]+\r\n)*\r\n/)
			// return undef;
		substr($$buf, 0, $end, '');

	} elsif (defined $headers{'content-length'}) {
		my $length = $headers{'content-length'};
		return undef unless $length =~ /^\d+$/;

		$self->_wait_length($c, $buf, $length) or return undef;
		$body = substr($$buf, 0, $length, '');
	}

	return {
		method => $method,
		uri => $uri,
		version => $version,
		header_list => \@list,
		headers => \%headers,
		body => $body,
		chunked => $chunked ? 1 : 0,
	};
}

# Reads until $$buf matches $re, returns where the match ends.  With $idle,
# waiting on an empty buffer gives up when the receiver goes down.
sub _wait_match {
	my ($self, $c, $buf, $re, $idle) = @_;

	while (1) {
		return $+[0] if $$buf =~ $re;
		$self->_fill($c, $buf, $idle && !length $$buf) or return undef;
	}
}

sub _wait_length {
	my ($self, $c, $buf, $length) = @_;

	while (length $$buf < $length) {
		$self->_fill($c, $buf, 0) or return 0;
	}

	return 1;
}

# Reads more into $buf: false on end of stream, when the receiver is gone,
# or, for an idle connection, when it goes down.
sub _fill {
	my ($self, $c, $buf, $idle) = @_;

	my $sel = IO::Select->new($c);

	while (1) {
		if ($sel->can_read($POLL)) {
			return sysread($c, $$buf, 65536, length $$buf);
		}

		POSIX::_exit(0) if getppid() != $self->{server};
		return 0 if $idle && $self->_control()->{mode} eq 'down';
	}
}

sub _peer_closed {
	my ($c) = @_;

	my $data;
	my $r = recv($c, $data, 1, MSG_PEEK | MSG_DONTWAIT);

	return defined $r && $data eq '';
}

sub _send {
	my ($c, $data) = @_;

	while (length $data) {
		my $n = syswrite($c, $data) or return 0;
		substr($data, 0, $n) = '';
	}

	return 1;
}

sub _log {
	my ($self, $entry) = @_;

	# handlers append concurrently; one locked write per entry
	open my $fh, '>>', "$self->{dir}/requests.log" or return;
	binmode $fh;
	flock $fh, LOCK_EX;
	syswrite $fh, $JSON->encode($entry) . "\n";
	close $fh;
}

sub _control {
	my ($self) = @_;

	my $control = $self->_read_json('control');
	$self->{control} = $control if $control;

	return $self->{control};
}

sub _write_json {
	my ($self, $name, $data) = @_;

	# rename keeps readers from seeing a half-written file
	my $tmp = "$self->{dir}/$name.$$.tmp";

	open my $fh, '>', $tmp or die "Can't create $tmp: $!\n";
	print $fh $JSON->encode($data);
	close $fh or die "Can't write $tmp: $!\n";

	rename $tmp, "$self->{dir}/$name"
		or die "Can't rename $tmp: $!\n";
}

sub _read_json {
	my ($self, $name) = @_;

	open my $fh, '<', "$self->{dir}/$name" or return undef;
	local $/;
	my $text = <$fh>;
	close $fh;

	return eval { $JSON->decode($text) };
}

###############################################################################

1;

###############################################################################
