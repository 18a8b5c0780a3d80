;;; ob-chat-ai-reply.el --- How a chat-ai reply is shown  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The ob-chat-ai authors

;; This file is not part of GNU Emacs.

;; SPDX-License-Identifier: GPL-3.0-or-later

;;; Commentary:

;; The text a chat-ai block's result holds: the reply of each choice,
;; indented when it is JSON or converted when the block asks for Org,
;; followed by chat-ai's own notes (the reply stopped early, the tokens
;; used, the request failed).
;;
;; chat-ai's own lines are made here and only here, so that they can be
;; told apart from what the model said: the placeholder a block shows
;; while it waits, the notes in square brackets, and the error line.
;; `ob-chat-ai-reply-answer' returns a result's text without them.

;;; Code:

;;;; Requirements

(require 'json)
(require 'seq)
(require 'subr-x)
(require 'org)
(require 'ob-chat-ai-process)
(require 'ob-chat-ai-convert)

(defvar org-babel-header-args:chat-ai)

;;;; Header args

(defun ob-chat-ai--param (params name)
  "Return the value of header arg NAME in PARAMS, nil when empty."
  (let ((value (cdr (assq name params))))
    (unless (member value '(nil ""))
      value)))

(defun ob-chat-ai--boolean (value)
  "Return t or :false for a yes or no VALUE, and nil when it is neither."
  (pcase (downcase (format "%s" value))
    ((or "yes" "t" "true" "on") t)
    ((or "no" "nil" "false" "off") :false)))

(defun ob-chat-ai--yes-p (params name)
  "Return non-nil when header arg NAME in PARAMS is yes."
  (eq (ob-chat-ai--boolean (ob-chat-ai--param params name)) t))

(defun ob-chat-ai--org-format-p (params)
  "Return non-nil when PARAMS ask for the reply as Org text, checking :format."
  (let ((format (format "%s" (or (ob-chat-ai--param params :format) "markdown"))))
    (unless (member format '("markdown" "org"))
      (ob-chat-ai--user-error ":format must be markdown or org, not %s" format))
    (equal format "org")))

;;;; chat-ai's own lines

(defun ob-chat-ai-reply-placeholder (model)
  "Return the placeholder of a block that waits for MODEL's reply."
  (format "chat-ai: waiting for %s..." (or model "the model")))

(defun ob-chat-ai-reply-note (format &rest args)
  "Return a note of chat-ai's own: FORMAT with ARGS, in square brackets."
  (concat "[chat-ai: " (apply #'format format args) "]"))

(defun ob-chat-ai-reply-error-line (message)
  "Return the result line of a request that failed with MESSAGE."
  (concat "chat-ai error: " message))

(defconst ob-chat-ai-reply-own-line-regexp
  "\\`\\(?:\\[chat-ai: .*\\]\\|chat-ai error: .*\\|chat-ai: waiting for .*\\.\\.\\.\\)\\'"
  "The regexp of a line that chat-ai wrote, not the model.")

(defun ob-chat-ai-reply-own-line-p (line)
  "Return non-nil when LINE is one of chat-ai's own lines."
  (string-match-p ob-chat-ai-reply-own-line-regexp line))

(defun ob-chat-ai-reply-answer (text)
  "Return what the model said in result TEXT, without chat-ai's own lines.
Return nil when nothing is left."
  (let ((lines (split-string text "\n")))
    (while (and lines (or (ob-chat-ai-reply-own-line-p (car (last lines)))
                          (string-blank-p (car (last lines)))))
      (setq lines (butlast lines)))
    (let ((answer (string-trim (string-join lines "\n"))))
      (unless (or (string-empty-p answer) (ob-chat-ai-reply-own-line-p answer))
        answer))))

;;;; The reply

(defun ob-chat-ai--choice-texts (deltas)
  "Return the reply text of each choice, in order, from DELTAS.
DELTAS are the delta events of a reply, the last one first."
  (let ((texts (make-vector (1+ (apply #'max 0 (mapcar (lambda (delta)
                                                          (alist-get 'choice delta))
                                                        deltas)))
                            nil)))
    (dolist (delta deltas)
      (push (alist-get 'text delta) (aref texts (alist-get 'choice delta))))
    (mapcar (lambda (pieces) (apply #'concat pieces)) texts)))

(defun ob-chat-ai-reply-file-links (files)
  "Return a line with a link for each of FILES, which the helper wrote.
A file inside `default-directory' is linked relative to it."
  (mapconcat (lambda (file)
               (format "[[file:%s]]"
                       (if (file-in-directory-p file default-directory)
                           (file-relative-name file)
                         (abbreviate-file-name file))))
             files "\n"))

(defun ob-chat-ai--reply-text (texts final params level)
  "Return the text to show for choice TEXTS and the FINAL event, as PARAMS ask.
An error becomes one line after whatever text had arrived, and is
also shown in the echo area.  With :usage yes, a line about the
tokens used follows the reply.  With :format org, Markdown becomes
Org, its headings below a heading of LEVEL."
  (let ((reply (ob-chat-ai--join-choices
                (cond
                 ((ob-chat-ai--param params :response-format)
                  (mapcar #'ob-chat-ai--pretty-json texts))
                 ((ob-chat-ai--org-format-p params)
                  (mapcar (lambda (text) (ob-chat-ai-convert-markdown text level))
                          texts))
                 (t texts)))))
    (pcase (alist-get 'type final)
      ("done"
       (let* ((early (seq-find (lambda (reason)
                                 (member reason '("length" "content_filter")))
                               (alist-get 'finish_reasons final)))
              (text (cond
                     ((alist-get 'files final)
                      (ob-chat-ai-reply-file-links (alist-get 'files final)))
                     (early
                      (concat reply "\n\n"
                              (ob-chat-ai-reply-note
                               "the reply stopped early: finish_reason %s" early)))
                     ((string-empty-p reply)
                      (ob-chat-ai-reply-note "the model sent an empty reply"))
                     (t reply))))
         (if (ob-chat-ai--yes-p params :usage)
             (concat text "\n\n" (ob-chat-ai--usage-line final))
           text)))
      (_
       (let ((line (pcase (alist-get 'kind final)
                     ("cancelled"
                      (ob-chat-ai-reply-note "cancelled; the reply is incomplete"))
                     ("invalid" (ob-chat-ai-reply-error-line
                                 (ob-chat-ai--invalid-message final)))
                     (_ (ob-chat-ai-reply-error-line (alist-get 'message final))))))
         (message "%s" line)
         (if (string-empty-p reply) line (concat reply "\n\n" line)))))))

(defun ob-chat-ai--heading-level ()
  "Return the level of the heading at point, 0 before the first heading."
  (or (org-current-level) 0))

(defun ob-chat-ai--pretty-json (text)
  "Return TEXT indented as JSON when it is JSON, else TEXT as it is."
  (condition-case nil
      (let ((json-encoding-pretty-print t)
            (json-null :null)
            (json-false :false))
        (json-encode (json-read-from-string text)))
    (error text)))

(defun ob-chat-ai--usage-line (final)
  "Return one line naming the model, the tokens and the finish of FINAL."
  (let ((usage (alist-get 'usage final)))
    (ob-chat-ai-reply-note
     "%s, %s, finish_reason %s"
     (or (alist-get 'model final) "the model")
     (if usage
         (format "tokens %s prompt + %s completion = %s"
                 (alist-get 'prompt_tokens usage)
                 (alist-get 'completion_tokens usage)
                 (alist-get 'total_tokens usage))
       "the server reported no token usage")
     (mapconcat (lambda (reason) (format "%s" reason))
                (alist-get 'finish_reasons final) ", "))))

(defun ob-chat-ai--join-choices (texts)
  "Return the choice TEXTS as one text, each choice after the first labelled."
  (let ((number 0))
    (mapconcat (lambda (text)
                 (setq number (1+ number))
                 (if (= number 1) text (format "\n\n[choice %d]\n%s" number text)))
               texts
               "")))

(defun ob-chat-ai--invalid-message (event)
  "Return the message of invalid-request EVENT, naming the header arg.
The helper names request fields as the API does (top_p); the block
knows them as header args (:top-p)."
  (let* ((message (alist-get 'message event))
         (param (alist-get 'param event))
         (header-arg (and param
                          (assq (intern (string-replace "_" "-" param))
                                (bound-and-true-p org-babel-header-args:chat-ai))
                          (concat ":" (string-replace "_" "-" param)))))
    (if (and header-arg (string-prefix-p param message))
        (concat header-arg (substring message (length param)))
      message)))

(defun ob-chat-ai--report-retry (event)
  "Show the user the line of retry EVENT: the request will be tried again."
  (message "chat-ai: %s" (alist-get 'message event)))

(provide 'ob-chat-ai-reply)

;;; ob-chat-ai-reply.el ends here
