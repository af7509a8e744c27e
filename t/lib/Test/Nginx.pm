package Test::Nginx;

# Test harness for ngx_http_api_sessions_module, in the manner of
# nginx-tests: every test file gets its own nginx (master and real workers)
# in a fresh temporary directory, on loopback ports chosen at run time.
#
#	my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(3);
#	$t->write_file_expand('nginx.conf', $conf)->run();
#	like(http_get('/'), qr/200 OK/, 'get');
#	my @records = $t->wait_records(1);
#
# Environment: TEST_NGINX_BINARY, TEST_NGINX_MODULE (empty: no module),
# TEST_NGINX_LEAVE (keep the directory), TEST_NGINX_VERBOSE (show the
# configuration, the error log and the traffic), TEST_NGINX_SLOWDOWN (a
# factor for every timeout, for an nginx run under valgrind).

###############################################################################

use warnings;
use strict;

# Loaded before our END block is compiled, so that block runs before
# Test::Builder's own and the two checks it adds still count.
use Test::More ();

use Exporter qw/ import /;

our @EXPORT = qw/
	port http http_get http_post_json http_end http_keepalive
	http_status http_header http_content patience
/;

use Cwd qw/ abs_path /;
use File::Basename qw/ dirname /;
use File::Path qw/ rmtree /;
use File::Spec;
use File::Temp qw/ tempdir /;
use IO::Select;
use IO::Socket::INET;
use IO::Socket::IP;
use JSON::PP;
use POSIX qw/ WNOHANG /;
use Scalar::Util qw/ refaddr weaken /;
use Time::HiRes qw/ sleep time /;

###############################################################################

# t/lib/Test/Nginx.pm -> repository root
my $REPO = abs_path(dirname(__FILE__) . '/../../..');

our $NGINX = File::Spec->rel2abs($ENV{TEST_NGINX_BINARY}
	// "$REPO/build/nginx");

# An empty TEST_NGINX_MODULE runs plain nginx, without load_module.
our $MODULE = $ENV{TEST_NGINX_MODULE}
	// "$REPO/build/ngx_http_api_sessions_module.so";
$MODULE = File::Spec->rel2abs($MODULE) if $MODULE ne '';

# Placeholder number (8080) -> { port => real port, lock => UDP socket }.
our %ports;

my %instances;

# Seconds for a normal run; patience() stretches them.
my $START_TIMEOUT = 10;
my $STOP_TIMEOUT = 30;
my $IO_TIMEOUT = 8;

our $SLOWDOWN = $ENV{TEST_NGINX_SLOWDOWN} || 1;

# Modules built unless configure says --without-http_<name>_module.
my %DEFAULT_MODULES = map { $_ => 1 } qw/
	access auth_basic autoindex browser charset empty_gif fastcgi geo grpc
	gzip limit_conn limit_req map memcached mirror proxy referer rewrite
	scgi split_clients ssi upstream_hash upstream_ip_hash
	upstream_keepalive upstream_least_conn upstream_random upstream_zone
	userid uwsgi
/;

# Modules built only with --with-http_<name>_module; "=dynamic" ones are not
# loaded by the harness and so count as absent.
my %OPTIONAL_MODULES = map { $_ => 1 } qw/
	addition auth_request dav degradation flv geoip gunzip gzip_static
	image_filter mp4 perl random_index realip secure_link slice ssl
	stub_status sub v2 v3 xslt
/;

###############################################################################

sub new {
	my ($class) = @_;

	Test::More::BAIL_OUT("$NGINX is not executable: run scripts/build "
		. "or point TEST_NGINX_BINARY at an nginx")
		unless -x $NGINX;

	Test::More::BAIL_OUT("no module at $MODULE, build it "
		. "or set TEST_NGINX_MODULE='' to test plain nginx")
		if $MODULE ne '' && !-f $MODULE;

	my $self = bless {
		pid => $$,
		problems => [],
	}, $class;

	# tempdir() dies itself when it cannot make the directory
	$self->{testdir} = tempdir('api-sessions-t-XXXXXXXX', TMPDIR => 1);

	# the prefix's default logs/ makes relative paths such as
	# "logs/api_sessions.ndjson" usable in test configs
	mkdir "$self->{testdir}/logs"
		or die "Can't create $self->{testdir}/logs: $!\n";

	# Run as root, workers are "nobody": like in /var/log/nginx they may
	# open what the master created, and create nothing themselves.
	chmod 0755, $self->{testdir}, "$self->{testdir}/logs";

	$instances{refaddr $self} = $self;
	weaken $instances{refaddr $self};

	return $self;
}

sub DESTROY {
	my ($self) = @_;

	# at scope exit during the run the checks can still be counted;
	# in global destruction Test::Builder has already finished
	$self->_finish(${^GLOBAL_PHASE} eq 'RUN');
}

END {
	for my $t (grep { defined } values %instances) {
		$t->_finish(1);
	}
}

sub _finish {
	my ($self, $checks) = @_;

	return if $self->{finished} || $self->{pid} != $$;
	$self->{finished} = 1;

	local $?;

	eval { $self->stop(); };
	push @{$self->{problems}}, "stop: $@" if $@;

	my $log = $self->_error_log();

	# the two checks plan() counted
	if ($checks && Test::More->builder->expected_tests) {
		my @alerts = $log =~ /^.*\[alert\].*$/mg;
		Test::More::is(join("\n", @alerts), '', 'error.log: no [alert]');

		my @crashes =
			$log =~ /^.*(?:exited on signal|core dumped).*$/mg;
		push @crashes, @{$self->{problems}};
		Test::More::is(join("\n", @crashes), '',
			'nginx: no crash, stopped in time');
	}

	Test::More::diag("error.log:\n$log") if $ENV{TEST_NGINX_VERBOSE};

	if ($ENV{TEST_NGINX_LEAVE}) {
		Test::More::diag("test directory left at $self->{testdir}");
	} else {
		rmtree($self->{testdir});
	}
}

###############################################################################

sub has {
	my ($self, @names) = @_;

	my @missing = grep { !$self->has_module($_) } @names;
	Test::More::plan(skip_all => "nginx is built without @missing")
		if @missing;

	return $self;
}

sub has_module {
	my ($self, $name) = @_;

	$self->{configure} //= `'$NGINX' -V 2>&1`;
	my $args = $self->{configure};

	return $MODULE ne '' if $name eq 'api_sessions';

	return $args !~ /--without-http(?!\S)/ if $name eq 'http';
	return $args !~ /--without-http-cache(?!\S)/ if $name eq 'cache';
	return $args !~ /--without-pcre(?!\S)/ if $name eq 'pcre';
	return $args =~ /--with-threads(?!\S)/ if $name eq 'threads';
	return $args =~ /--with-$name(?!\S)/ if $name =~ /^(?:stream|mail)$/;

	(my $module = $name) =~ s/^http_//;

	return $args !~ /--without-http_${module}_module(?!\S)/
		if $DEFAULT_MODULES{$module};

	return $args =~ /--with-http_${module}_module(?!\S)/
		if $OPTIONAL_MODULES{$module};

	# a typo must not quietly skip a whole test file
	die "has(): unknown module \"$name\"\n";
}

# A timeout of $seconds in a normal run, stretched by TEST_NGINX_SLOWDOWN.
# The harness stretches its own timeouts and those of the wait_*() calls; a
# timeout a test gives a request is what the test is about and stays.
sub patience {
	my ($seconds) = @_;
	return $seconds * $SLOWDOWN;
}

sub plan {
	my ($self, $tests) = @_;

	# no [alert] and no crash, checked at exit
	Test::More::plan(tests => $tests + 2);

	return $self;
}

sub testdir {
	my ($self) = @_;
	return $self->{testdir};
}

###############################################################################

sub write_file {
	my ($self, $name, $content) = @_;

	open my $fh, '>', "$self->{testdir}/$name"
		or die "Can't create $name: $!\n";
	binmode $fh;
	print $fh $content;
	close $fh or die "Can't write $name: $!\n";

	return $self;
}

sub write_file_expand {
	my ($self, $name, $content) = @_;

	return $self->write_file($name, $self->_expand($content));
}

sub read_file {
	my ($self, $name) = @_;

	open my $fh, '<', "$self->{testdir}/$name"
		or die "Can't open $name: $!\n";
	binmode $fh;
	local $/;
	my $content = <$fh>;
	close $fh;

	return $content;
}

sub _expand {
	my ($self, $content) = @_;

	$content =~ s/%%TEST_GLOBALS%%/$self->test_globals()/ge;
	$content =~ s/%%TEST_GLOBALS_HTTP%%/$self->test_globals_http()/ge;
	$content =~ s/%%TESTDIR%%/$self->{testdir}/g;
	$content =~ s/%%PORT_(\d+)%%/port($1)/ge;

	die "unknown placeholder $1\n" if $content =~ /(%%[A-Z0-9_]+%%)/;

	return $content;
}

sub test_globals {
	my ($self) = @_;

	my $dir = $self->{testdir};
	my $s = '';

	# the comment keeps line numbers in "[emerg] ... in nginx.conf:N" the
	# same with and without the module
	$s .= $MODULE ne '' ? "load_module $MODULE;\n"
		: "# TEST_NGINX_MODULE is empty: no load_module\n";
	$s .= "pid $dir/nginx.pid;\n";
	$s .= "error_log $dir/error.log info;\n";

	return $s;
}

sub test_globals_http {
	my ($self) = @_;

	my $dir = $self->{testdir};
	my $s = "client_body_temp_path $dir/client_body_temp;\n";

	for my $m (qw/ proxy fastcgi uwsgi scgi /) {
		$s .= "${m}_temp_path $dir/${m}_temp;\n"
			if $self->has_module($m);
	}

	$s .= "access_log off;\n";

	return $s;
}

###############################################################################

sub port {
	shift if ref $_[0];
	my ($num) = @_;

	return $ports{$num}{port} if $ports{$num};

	for (1 .. 100) {
		my $tcp = IO::Socket::INET->new(
			Proto => 'tcp',
			LocalAddr => '127.0.0.1:0',
		) or die "Can't bind a loopback port: $!\n";

		my $port = $tcp->sockport();
		next if grep { $_->{port} == $port } values %ports;

		# The TCP socket is closed before nginx binds the port; in the
		# meantime the same number held in UDP keeps it from the other
		# test files running in parallel, which take it the same way.
		my $lock = IO::Socket::INET->new(
			Proto => 'udp',
			LocalAddr => "127.0.0.1:$port",
		) or next;

		$ports{$num} = { port => $port, lock => $lock };
		return $port;
	}

	die "Can't allocate a port for $num\n";
}

# "port => 8081" means the placeholder; a real port passes as is.
sub _peer_port {
	my ($num) = @_;

	return port(8080) unless defined $num;
	return $ports{$num}{port} if $ports{$num};
	return $num if grep { $_->{port} == $num } values %ports;
	return port($num);
}

###############################################################################

sub run {
	my ($self) = @_;

	my $dir = $self->{testdir};
	my $conf = $self->read_file('nginx.conf');

	Test::More::diag("nginx.conf:\n$conf") if $ENV{TEST_NGINX_VERBOSE};

	# The master stays our child, so stop() can wait for it and see how
	# it exited; it still runs real worker processes.
	die "run(): \"daemon on\" is not supported\n"
		if $conf =~ /^\s*daemon\s+on\s*;/m;
	my @globals = $conf =~ /^\s*daemon\s/m ? () : ('-g', 'daemon off;');

	unlink "$dir/nginx.pid";

	my $pid = fork() // die "Can't fork: $!\n";

	if ($pid == 0) {
		open STDOUT, '>>', "$dir/stderr.log" or POSIX::_exit(127);
		open STDERR, '>&', \*STDOUT or POSIX::_exit(127);
		{ exec($NGINX, '-p', "$dir/", '-c', 'nginx.conf',
			'-e', "$dir/error.log", @globals) };
		POSIX::_exit(127);
	}

	$self->{master} = $pid;
	$self->{started} = 1;

	my $deadline = time() + patience($START_TIMEOUT);
	my $workers = _worker_count($conf);

	while (1) {
		if (waitpid($pid, WNOHANG) == $pid) {
			$self->{started} = 0;
			die "nginx failed to start (status $?)\n"
				. "error.log:\n" . $self->_error_log()
				. "stderr:\n" . $self->_file('stderr.log');
		}

		last if -s "$dir/nginx.pid"
			&& $self->_ports_accept(_listen_ports($conf))
			&& $self->worker_pids() >= $workers;

		if (time() > $deadline) {
			$self->stop();
			die "nginx did not start in " . patience($START_TIMEOUT)
				. " s\n"
				. $self->_error_log();
		}

		sleep(0.05);
	}

	return $self;
}

sub run_config_test {
	my ($self, $conf, %opts) = @_;

	my $name = $opts{name} // 'test.conf';
	my $dir = $self->{testdir};

	$self->write_file_expand($name, $conf);

	my $pid = fork() // die "Can't fork: $!\n";

	if ($pid == 0) {
		open STDOUT, '>', "$dir/$name.out" or POSIX::_exit(127);
		open STDERR, '>&', \*STDOUT or POSIX::_exit(127);
		{ exec($NGINX, '-t', '-p', "$dir/", '-c', $name,
			'-e', "$dir/error.log") };
		POSIX::_exit(127);
	}

	waitpid($pid, 0);
	my $status = $? >> 8;

	return ($status, $self->read_file("$name.out"));
}

# "[emerg]" lines of nginx -t output, with the test directory written as
# %%TESTDIR%% so that tests can compare whole lines.
sub emerg_lines {
	my ($self, $text) = @_;

	my @lines = $text =~ /^(?:nginx: )?(\[emerg\].*?)\s*$/mg;
	s/\Q$self->{testdir}\E/%%TESTDIR%%/g for @lines;

	return @lines;
}

sub stop {
	my ($self) = @_;

	return $self unless $self->{started};

	my $pid = $self->{master};
	$self->{started} = 0;

	kill 'QUIT', $pid;
	my $status = _wait_exit($pid, patience($STOP_TIMEOUT));

	if (!defined $status) {
		push @{$self->{problems}}, "master $pid still running "
			. patience($STOP_TIMEOUT) . " s after SIGQUIT";
		kill 'TERM', $pid;
		$status = _wait_exit($pid, 10);
	}

	if (!defined $status) {
		kill 'KILL', $pid;
		waitpid($pid, 0);
		return $self;
	}

	push @{$self->{problems}}, "master $pid exited on signal "
		. ($status & 127) if $status & 127;

	return $self;
}

sub _wait_exit {
	my ($pid, $timeout) = @_;

	my $deadline = time() + $timeout;

	while (time() < $deadline) {
		return $? if waitpid($pid, WNOHANG) == $pid;
		sleep(0.05);
	}

	return undef;
}

sub master_pid {
	my ($self) = @_;
	return $self->{started} ? $self->{master} : undef;
}

# Worker processes of the running master, read from /proc; with "all" the
# ones still shutting down after a reload are included.  Under a tool such
# as valgrind the processes keep the tool's command line instead of nginx's
# titles: every child of the master is then a worker, and one shutting down
# cannot be told apart.
sub worker_pids {
	my ($self, %opts) = @_;

	my $master = $self->master_pid() or return ();
	my $titled = _cmdline($master) =~ /^nginx: master process/;
	my @pids;

	opendir my $proc, '/proc' or die "Can't open /proc: $!\n";

	for my $pid (grep { /^\d+$/ } readdir $proc) {
		open my $fh, '<', "/proc/$pid/stat" or next;
		my $stat = <$fh> // next;

		# the command name may hold spaces and parentheses
		my ($ppid) = substr($stat, rindex($stat, ')') + 2)
			=~ /^\S+ (\d+)/ or next;
		next unless $ppid == $master;

		if ($titled) {
			my $title = _cmdline($pid);
			next unless $title =~ /worker process/;
			next if !$opts{all} && $title =~ /shutting down/;
		}

		push @pids, $pid;
	}

	# an array, not sort(): callers count the pids in scalar context
	@pids = sort { $a <=> $b } @pids;
	return @pids;
}

sub _cmdline {
	my ($pid) = @_;

	open my $fh, '<', "/proc/$pid/cmdline" or return '';
	local $/;
	return <$fh> // '';
}

# Returns true once the old workers are gone and the new ones run; a new
# configuration the master rejects dies, or returns false with "may_fail".
sub reload {
	my ($self, %opts) = @_;

	my $timeout = patience($opts{timeout} // $STOP_TIMEOUT);
	my %old = map { $_ => 1 } $self->worker_pids(all => 1);
	my $offset = -s "$self->{testdir}/error.log" // 0;

	kill 'HUP', $self->{master};

	my $deadline = time() + $timeout;

	while (time() < $deadline) {
		# only what was logged since the HUP: under load the log grows fast
		my $log = $self->_error_log_since($offset);

		# a bad new configuration leaves the old workers running
		if (my @emerg = $log =~ /^.*\[emerg\] $self->{master}#.*$/mg) {
			return 0 if $opts{may_fail};
			die "reload failed:\n" . join("\n", @emerg) . "\n";
		}

		my $conf = $self->read_file('nginx.conf');
		my @now = $self->worker_pids(all => 1);
		my @left = grep { $old{$_} } @now;

		return 1 if !@left && @now >= _worker_count($conf)
			&& $self->_ports_accept(_listen_ports($conf));

		sleep(0.05);
	}

	die "reload did not complete in $timeout s\n";
}

sub reopen {
	my ($self) = @_;

	# Master and workers each log "reopening logs" before reopening, into
	# the file they had open, which the test may have renamed already.
	my $master = $self->{master};
	my $log;
	open $log, '<', "/proc/$master/fd/2"
		or open $log, '<', "$self->{testdir}/error.log"
		or die "Can't open error log: $!\n";

	my $count = sub {
		seek $log, 0, 0;
		local $/;
		my $text = <$log> // '';
		# not the master's "signal 10 (SIGUSR1) received ..." line
		return scalar(() = $text
			=~ /^\S+ \S+ \[notice\] \d+#\d+: reopening logs$/mg);
	};

	my @workers = $self->worker_pids();
	my $want = $count->() + 1 + @workers;

	kill 'USR1', $master;

	my $deadline = time() + patience($START_TIMEOUT);

	while (time() < $deadline) {
		return $self if $count->() >= $want;
		sleep(0.05);
	}

	die "reopen did not complete in " . patience($START_TIMEOUT) . " s "
		. "(error_log level above notice?)\n";
}

# Workers to wait for.  A new worker counts once it has set its title,
# so the whole number must be waited for, not just the first one.
sub _worker_count {
	my ($conf) = @_;

	return 0 if $conf =~ /^\s*master_process\s+off\s*;/m;
	return $conf =~ /^\s*worker_processes\s+(\d+)\s*;/m ? $1 : 1;
}

sub _listen_ports {
	my ($conf) = @_;

	my @ports;

	while ($conf =~ /^\s*listen\s+([^\s;]+)([^;]*)/mg) {
		my ($addr, $params) = ($1, $2);

		# nothing to connect to over TCP
		next if $addr =~ /^unix:/ || $params =~ /\b(?:udp|quic)\b/;

		my ($host, $port) = $addr =~ /^(?:(.*):)?(\d+)$/ or next;
		$host = '127.0.0.1'
			if !defined $host || $host =~ /^(?:\*|0\.0\.0\.0)$/;
		$host =~ s/^\[(.*)\]$/$1/;

		push @ports, [ $host, $port ];
	}

	return @ports;
}

sub _ports_accept {
	my ($self, @ports) = @_;

	for my $p (@ports) {
		my $s = IO::Socket::IP->new(
			Proto => 'tcp',
			PeerHost => $p->[0],
			PeerPort => $p->[1],
		) or return 0;
		close $s;
	}

	return 1;
}

sub _error_log {
	my ($self) = @_;
	return $self->_file('error.log');
}

sub _error_log_since {
	my ($self, $offset) = @_;

	open my $fh, '<', "$self->{testdir}/error.log" or return '';
	binmode $fh;
	seek($fh, $offset, 0) if $offset <= -s $fh;
	local $/;
	my $log = <$fh> // '';
	close $fh;

	return $log;
}

sub _file {
	my ($self, $name) = @_;
	return -e "$self->{testdir}/$name" ? $self->read_file($name) : '';
}

###############################################################################

# Records of the NDJSON export file, in file order.  A line that is not a
# JSON object dies: the exporter must never write one.
sub records {
	my ($self, $file) = @_;

	my ($records, $partial, $path) = $self->_read_records($file);

	die "$path: unterminated last line: $partial\n" if length $partial;

	return @$records;
}

# Records are written by exporter threads after a flush interval, so tests
# poll for them.  Returns what there is at the timeout, for the test's own
# count check to fail on.
sub wait_records {
	my ($self, $n, %opts) = @_;

	my $deadline = time() + patience($opts{timeout} // 10);

	while (1) {
		my ($records, $partial, $path)
			= $self->_read_records($opts{file});

		return @$records if @$records >= $n && !length $partial;

		if (time() > $deadline) {
			die "$path: unterminated last line: $partial\n"
				if length $partial;
			Test::More::diag("wait_records: " . scalar(@$records)
				. " of $n records in $path");
			return @$records;
		}

		sleep(0.05);
	}
}

sub _read_records {
	my ($self, $file) = @_;

	$file //= 'api_sessions.ndjson';
	my $path = $file =~ m!^/! ? $file : "$self->{testdir}/$file";

	return ([], '', $path) unless -e $path;

	open my $fh, '<', $path or die "Can't open $path: $!\n";
	binmode $fh;
	local $/;
	my $text = <$fh> // '';
	close $fh;

	# a line still being written has no newline yet (cut at the last newline:
	# a regex anchored at the end would be quadratic in the line length)
	my $cut = rindex($text, "\n") + 1;
	my $partial = substr($text, $cut);
	substr($text, $cut) = '';

	# every line counts, an empty one too; the last field is what
	# follows the final newline
	my @lines = split /\n/, $text, -1;
	pop @lines;

	my $json = JSON::PP->new->utf8;
	my @records;
	my $line = 0;

	for my $l (@lines) {
		$line++;

		my $r = eval { $json->decode($l) };

		if (ref $r ne 'HASH') {
			my $why = $@ ? $@ =~ s/ at \S+ line \d+\.\n\z//r
				: 'not an object';
			die "$path:$line: invalid JSON record ($why): $l\n";
		}

		push @records, $r;
	}

	return (\@records, $partial, $path);
}

###############################################################################

# With TEST_NGINX_VERBOSE, what goes over the wire shows as TAP notes: the
# direction, then the bytes, control characters escaped, long ones cut.
sub _trace {
	my ($direction, $bytes) = @_;

	return unless $ENV{TEST_NGINX_VERBOSE};

	my $shown = length $bytes > 4096
		? substr($bytes, 0, 4096) . ' [' . length($bytes) . ' bytes]'
		: $bytes;
	$shown =~ s/([\x00-\x09\x0b-\x1f\x7f-\xff])/sprintf('\\x%02x', ord $1)/ge;

	Test::More::note("$direction $_") for split /\n/, $shown;
}

###############################################################################

sub http_get {
	my ($uri, %extra) = @_;

	return http("GET $uri HTTP/1.0\r\nHost: localhost\r\n\r\n", %extra);
}

# Options are the lower-case keys http() knows; every other pair is a
# request header, overriding the defaults by name.
sub http_post_json {
	my ($uri, $json, %extra) = @_;

	my %opts;

	for my $o (qw/ port socket start sleep timeout /) {
		$opts{$o} = delete $extra{$o} if exists $extra{$o};
	}

	utf8::encode($json) if utf8::is_utf8($json);

	my %headers = (
		'Host' => 'localhost',
		'Content-Type' => 'application/json',
		'Content-Length' => length $json,
	);

	for my $h (keys %extra) {
		delete $headers{$_} for grep { lc $_ eq lc $h } keys %headers;
		$headers{$h} = $extra{$h};
	}

	my $request = "POST $uri HTTP/1.0\r\n"
		. join('', map { "$_: $headers{$_}\r\n" } sort keys %headers)
		. "\r\n";

	return http($request, body => $json, %opts);
}

# Sends a request and reads the reply until the server closes the
# connection; undef if it cannot connect or does not answer in time.
# Options: port (a placeholder number or a real port), socket (an open
# connection to use), sleep (seconds between the request and its body),
# body, start (return the socket instead of the reply), timeout.
sub http {
	my ($request, %extra) = @_;

	my $s = $extra{socket} // _connect($extra{port}, $extra{timeout})
		// return undef;

	_trace('>', $request);
	_send($s, $request) or return undef;

	sleep($extra{sleep}) if $extra{sleep};

	if (defined $extra{body}) {
		_trace('>', $extra{body});
		_send($s, $extra{body}) or return undef;
	}

	# "start": the caller reads the reply later, with http_end()
	return $s if $extra{start};
	return http_end($s, %extra);
}

sub http_end {
	my ($s, %extra) = @_;

	my $deadline = time() + ($extra{timeout} // patience($IO_TIMEOUT));
	my $sel = IO::Select->new($s);
	my $reply = '';

	while (1) {
		my $left = $deadline - time();

		if ($left <= 0 || !$sel->can_read($left)) {
			_trace("<", "timed out after: $reply");
			close $s;
			return undef;
		}

		my $n = sysread($s, $reply, 65536, length $reply);
		last unless $n;
	}

	close $s;
	_trace("<", $reply);

	return $reply;
}

# Several requests on one connection, each read by its framing.  A request
# starting with "/" is a GET of that URI; anything else is sent verbatim.
sub http_keepalive {
	my ($requests, %extra) = @_;

	my $s = _connect($extra{port}, $extra{timeout}) // return ();
	my $buf = '';
	my @replies;

	for my $i (0 .. $#$requests) {
		my $r = $requests->[$i];

		$r = "GET $r HTTP/1.1\r\nHost: localhost\r\n"
			. ($i == $#$requests ? "Connection: close\r\n" : '')
			. "\r\n"
			if $r =~ m!^/!;

		_trace(">", $r);
		_send($s, $r) or last;

		my $reply = _read_response($s, \$buf, scalar($r =~ /^HEAD /),
			$extra{timeout} // patience($IO_TIMEOUT));
		last unless defined $reply;

		_trace("<", $reply);
		push @replies, $reply;
	}

	close $s;

	return @replies;
}

sub _connect {
	my ($port, $timeout) = @_;

	$port = _peer_port($port);

	my $s = IO::Socket::INET->new(
		Proto => 'tcp',
		PeerAddr => "127.0.0.1:$port",
		Timeout => $timeout // patience($IO_TIMEOUT),
	);

	_trace("!", "connect to 127.0.0.1:$port failed: $!") unless $s;

	return $s;
}

sub _send {
	my ($s, $data) = @_;

	local $SIG{PIPE} = 'IGNORE';

	while (length $data) {
		my $n = syswrite($s, $data);

		if (!defined $n) {
			_trace("!", "send failed: $!");
			return 0;
		}

		substr($data, 0, $n) = '';
	}

	return 1;
}

sub _read_response {
	my ($s, $buf, $head, $timeout) = @_;

	my $deadline = time() + $timeout;
	my $sel = IO::Select->new($s);

	my $fill = sub {
		my $left = $deadline - time();
		return 0 if $left <= 0 || !$sel->can_read($left);
		return sysread($s, $$buf, 65536, length $$buf);
	};

	my $end;
	until (($end = index($$buf, "\r\n\r\n")) >= 0) {
		$fill->() or return undef;
	}

	my $header = substr($$buf, 0, $end + 4);
	my ($status) = $header =~ m!^HTTP/\d\.\d (\d{3})! or return undef;

	my $length;

	if ($head || $status =~ /^(?:1..|204|304)$/) {
		$length = 0;

	} elsif ($header =~ /^Transfer-Encoding:\s*chunked\s*$/mi) {
		my $last;
		until (defined($last = _chunked_end($$buf, $end + 4))) {
			$fill->() or return undef;
		}
		$length = $last - $end - 4;

	} elsif ($header =~ /^Content-Length:\s*(\d+)\s*$/mi) {
		$length = $1;

	} else {
		1 while $fill->();
		$length = length($$buf) - $end - 4;
	}

	while (length($$buf) < $end + 4 + $length) {
		$fill->() or return undef;
	}

	return substr($$buf, 0, $end + 4 + $length, '');
}

# Offset just past a complete chunked body starting at $pos, or undef.
sub _chunked_end {
	my ($data, $pos) = @_;

	while (1) {
		my $eol = index($data, "\r\n", $pos);
		return undef if $eol < 0;

		my ($size) = substr($data, $pos, $eol - $pos) =~ /^([0-9a-f]+)/i
			or return undef;
		$pos = $eol + 2;

		last if hex($size) == 0;

		$pos += hex($size) + 2;
		return undef if $pos > length $data;
	}

	# trailer fields up to an empty line
	while (1) {
		my $eol = index($data, "\r\n", $pos);
		return undef if $eol < 0;

		my $empty = $eol == $pos;
		$pos = $eol + 2;

		return $pos if $empty;
	}
}

###############################################################################

sub http_status {
	my ($reply) = @_;

	return undef unless defined $reply;
	return $reply =~ m!^HTTP/\d\.\d (\d{3})! ? $1 + 0 : undef;
}

sub http_header {
	my ($reply, $name) = @_;

	return undef unless defined $reply;

	my ($header) = $reply =~ /^(.*?)\r?\n\r?\n/s or return undef;

	return $header =~ /^\Q$name\E:[ \t]*(.*?)[ \t]*\r?$/mi ? $1 : undef;
}

# The body, with chunked transfer encoding removed; undef when a chunked
# body stops before its last chunk.
sub http_content {
	my ($reply) = @_;

	return undef unless defined $reply;

	my ($header, $body) = $reply =~ /^(.*?)\r?\n\r?\n(.*)\z/s
		or return undef;

	return $body unless $header =~ /^Transfer-Encoding:\s*chunked/mi;

	my ($content, $pos) = ('', 0);

	while (1) {
		my $eol = index($body, "\r\n", $pos);
		return undef if $eol < 0;

		my ($size) = substr($body, $pos, $eol - $pos) =~ /^([0-9a-f]+)/i
			or return undef;
		return $content if hex($size) == 0;

		$pos = $eol + 2;
		return undef if $pos + hex($size) > length $body;

		$content .= substr($body, $pos, hex $size);
		$pos += hex($size) + 2;
	}
}

###############################################################################

1;

###############################################################################
