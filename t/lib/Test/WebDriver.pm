package Test::WebDriver;

# Headless Chromium through chromedriver's W3C WebDriver API, for the tests
# that drive the explorer's UI in a real browser.
#
#	my @programs = browser_programs();	# before plan(): fails or skips
#	my $t = Test::Nginx->new()->...->plan(3);
#	my $browser = Test::WebDriver->new(@programs, $t->testdir());
#	$browser->open($url);
#	$browser->click('#block-session');
#
# Needs Debian's chromium and chromium-driver, or CHROMIUM and CHROMEDRIVER
# pointing at them. Without them the test fails, unless
# API_SESSIONS_SKIP_BROWSER=1 says to skip it.

###############################################################################

use warnings;
use strict;

use Exporter qw/ import /;
use File::Spec;
use HTTP::Tiny;
use JSON::PP;
use POSIX ();
use Time::HiRes qw/ sleep time /;

use Test::More ();
use Test::Nginx;

our @EXPORT = qw/ browser_programs /;

# The key under which WebDriver returns an element reference.
my $ELEMENT = 'element-6066-11e4-a52e-4f735466cecf';

###############################################################################

sub _find_program {
	my ($variable, @names) = @_;

	if (defined $ENV{$variable}) {
		return -x $ENV{$variable} ? $ENV{$variable} : undef;
	}

	for my $dir (File::Spec->path()) {
		for my $name (@names) {
			my $path = "$dir/$name";
			return $path if -f $path && -x _;
		}
	}

	return undef;
}

# Chromium's and chromedriver's paths; without them the test ends here, as a
# failure unless skipping was asked for.
sub browser_programs {
	my $chromium = _find_program('CHROMIUM',
		qw/ chromium chromium-browser google-chrome /);
	my $driver = _find_program('CHROMEDRIVER', 'chromedriver');

	return ($chromium, $driver) if $chromium && $driver;

	Test::More::plan(skip_all => 'chromium or chromedriver not found, '
		. 'API_SESSIONS_SKIP_BROWSER=1')
		if ($ENV{API_SESSIONS_SKIP_BROWSER} // '') eq '1';
	Test::More::plan(tests => 1);
	Test::More::fail('the browser test needs chromium and chromedriver '
		. '(Debian: apt-get install chromium chromium-driver; or set '
		. 'CHROMIUM and CHROMEDRIVER); API_SESSIONS_SKIP_BROWSER=1 skips it');
	exit;
}

# chromedriver on a free loopback port and a session in a headless Chromium
# whose profile is made under $dir; both end with the object.
sub new {
	my ($class, $chromium, $driver, $dir) = @_;

	my $port = port(9515);

	my $pid = fork() // die "fork: $!\n";
	if ($pid == 0) {
		CORE::open(STDOUT, '>', '/dev/null');
		CORE::open(STDERR, '>', "$dir/chromedriver.log");
		exec($driver, "--port=$port") or POSIX::_exit(1);
	}

	my $self = bless {
		pid => $pid,
		owner => $$,
		http => HTTP::Tiny->new(timeout => 60),
		url => "http://127.0.0.1:$port",
	}, $class;

	my $deadline = time() + patience(30);
	until ($self->{http}->get("$self->{url}/status")->{success}) {
		die "chromedriver did not start\n" if time() > $deadline;
		sleep(0.1);
	}

	my $session = $self->_call('POST', '/session', { capabilities => {
		alwaysMatch => {
			browserName => 'chrome',
			'goog:chromeOptions' => {
				binary => $chromium,
				args => [
					qw/ --headless --no-sandbox --disable-gpu
					--disable-background-networking
					--disable-component-update --disable-sync
					--no-first-run --disable-dev-shm-usage /,
					'--window-size=1360,2200',
					"--user-data-dir=$dir/chromium",
				],
			},
		},
	}});

	$self->{url} .= "/session/$session->{sessionId}";

	return $self;
}

sub DESTROY {
	my ($self) = @_;

	return if $self->{owner} != $$;

	local $?;
	$self->{http}->delete($self->{url});
	kill 'TERM', $self->{pid};
	waitpid($self->{pid}, 0);
}

# A WebDriver command; its "value", or a die with WebDriver's error.
sub _call {
	my ($self, $method, $path, $body) = @_;

	my $r = $self->{http}->request($method, "$self->{url}$path", {
		headers => { 'Content-Type' => 'application/json' },
		content => defined $body ? encode_json($body) : '{}',
	});

	my $reply = eval { decode_json($r->{content}) } // {};
	die "WebDriver $method $path: $r->{status} $r->{content}\n"
		unless $r->{success};

	return $reply->{value};
}

###############################################################################

sub open {
	my ($self, $url) = @_;
	$self->_call('POST', '/url', { url => $url });
}

sub current_url {
	my ($self) = @_;
	return $self->_call('GET', '/url');
}

sub find_all {
	my ($self, $css) = @_;
	my $found = $self->_call('POST', '/elements',
		{ using => 'css selector', value => $css });
	return map { $_->{$ELEMENT} } @$found;
}

sub find {
	my ($self, $css) = @_;
	my ($element) = $self->find_all($css);
	die "no element matches \"$css\" on " . $self->current_url() . "\n"
		unless defined $element;
	return $element;
}

sub click {
	my ($self, $css) = @_;
	my $element = $self->find($css);
	$self->_call('POST', "/element/$element/click");
}

sub type_into {
	my ($self, $css, $text) = @_;
	my $element = $self->find($css);
	$self->_call('POST', "/element/$element/clear");
	$self->_call('POST', "/element/$element/value", { text => $text });
}

sub text {
	my ($self, $css) = @_;
	my $element = $self->find($css);
	return $self->_call('GET', "/element/$element/text");
}

sub script {
	my ($self, $script) = @_;
	return $self->_call('POST', '/execute/sync',
		{ script => $script, args => [] });
}

# Polls $done->() until it holds; false after $seconds without.
sub wait_until {
	my ($self, $done, $seconds) = @_;

	my $deadline = time() + patience($seconds // 20);
	until ($done->()) {
		return 0 if time() > $deadline;
		sleep(0.05);
	}

	return 1;
}

###############################################################################

1;

###############################################################################
